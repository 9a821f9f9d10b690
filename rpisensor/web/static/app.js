// rpisensor's page: a tile per input, sensor and output, each with a plot of its history,
// kept live with Server-Sent Events. The plots are drawn with uPlot (static/uplot/, MIT, its
// licence beside it), shipped in the package: no build step, nothing from the Internet.
"use strict";

const COLOURS = { on: "#2f9e44", off: "#ced4da", line: "#1971c2", band: "rgba(25, 113, 194, 0.18)",
  grid: "#e9ecef", axis: "#6c7383" };
const HISTORY_LIMIT = 10000;   // readings one history answer holds at most (the API's limit)
const SYNC = "rpisensor";      // the plots' cursors move together

const page = {
  tiles: new Map(),    // "device\0sensor" -> the latest reading (with its kind)
  series: new Map(),   // "device\0sensor" -> readings in the range, oldest first
  before: new Map(),   // "device\0sensor" -> the newest reading before them: the state a plot starts in
  declared: new Map(), // "device\0sensor" -> what the role says of it (serve): kind, levels, unit
  plots: new Map(),    // "device\0sensor" -> its Plot
  loaded: [0, 0],      // seconds: the range the history was asked for, and from when it is complete
                       // (later than asked when the answer's limit left older readings out)
  last: 0,             // the id of the newest reading the page has
  range: 600,          // seconds of history shown
  zoom: null,          // [from, to] in seconds while zoomed in by a drag; null: the range up to now
  offset: 0,           // the server's clock minus ours, in milliseconds
  staleAfter: 60,
  online: false,
  health: {},
  controls: { simulate: [], outputs: [] },
  info: {},
  source: null,
};

const keyOf = (r) => r.device + "\u0000" + r.sensor;
const now = () => (Date.now() + page.offset) / 1000;
const seconds = (ts) => Date.parse(ts) / 1000;
const $ = (selector, root = document) => root.querySelector(selector);

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// -- loading and following ---------------------------------------------------------

async function load() {
  const state = await getJSON("/api/state");
  page.info = { role: state.role, device: state.device, stream: state.stream };
  page.offset = Date.parse(state.now) - Date.now();
  page.controls = state.controls;
  page.health = state.health;
  page.staleAfter = state.stale_after ?? page.staleAfter;
  for (const sensor of state.sensors || []) {
    const declared = { ...sensor, device: state.device };
    page.declared.set(keyOf(declared), declared);
  }
  for (const tile of state.tiles) page.tiles.set(keyOf(tile), tile);
  page.last = Math.max(page.last, state.last);
  for (const key of page.declared.keys()) tileFor(key); // in the order the role declares them
  await loadHistory();
  render();
  follow();
}

async function loadHistory() {
  const history = await getJSON(`/api/readings?window=${page.range}&limit=${HISTORY_LIMIT}`);
  const live = [...page.series.values()].flat().filter((r) => r.id > history.last);
  page.series = new Map();
  page.before = new Map();
  for (const reading of history.before) {
    page.before.set(keyOf(reading), reading);
    showReading(reading);
  }
  for (const reading of history.readings.concat(live)) addPoint(reading);
  for (const reading of history.readings) showReading(reading);
  page.loaded = [now() - page.range, seconds(history.from)];
  page.last = Math.max(page.last, history.last);
}

function follow() {
  // The browser resumes by itself with Last-Event-ID; after a refusal (503) we start again.
  const source = page.source = new EventSource("/events?after=" + page.last);
  source.addEventListener("reading", (message) => {
    const reading = JSON.parse(message.data);
    page.last = reading.id;
    addPoint(reading);
    showReading(reading);
  });
  source.addEventListener("health", (message) => {
    page.health = JSON.parse(message.data);
    // The ids count in another stream now (a journal made anew, a role restarted): start over.
    if (page.health.stream !== page.info.stream) location.reload();
    renderHealth();
  });
  source.onopen = () => setOnline(true);
  source.onerror = () => {
    setOnline(false);
    if (source.readyState === EventSource.CLOSED) setTimeout(follow, 3000);
  };
}

function addPoint(reading) {
  const key = keyOf(reading);
  if (!page.series.has(key)) page.series.set(key, []);
  const readings = page.series.get(key);
  // In the order they were taken: a reporter catching up sends older ones after newer ones.
  let i = readings.length;
  while (i > 0 && readings[i - 1].ts > reading.ts) i--;
  readings.splice(i, 0, reading);
  page.plots.get(key)?.changed();
}

function showReading(reading) {
  const key = keyOf(reading);
  const known = page.tiles.get(key);
  if (!known || reading.ts >= known.ts) page.tiles.set(key, { ...known, ...reading, kind: kindOf(key, reading) });
  const tile = tileFor(key);
  updateTile(tile, key);
  // An output's change is a reading too: its switch follows it, whoever switched it.
  const toggle = $("input[data-output]", tile);
  if (toggle) toggle.checked = page.tiles.get(key).value > 0;
}

// As the server decides (api.py): what the role declares, else no unit and a value of 0 or 1 is a digital input.
function kindOf(key, reading) {
  const declared = page.declared.get(key);
  if (declared) return declared.kind;
  if (reading && reading.kind) return reading.kind;
  const known = page.tiles.get(key);
  if (known && known.kind) return known.kind;
  return reading && reading.unit == null && (reading.value === 0 || reading.value === 1) ? "digital" : "measurement";
}

function setOnline(online) {
  page.online = online;
  const link = $("#link");
  link.textContent = online ? "live" : "reconnecting…";
  link.className = "link " + (online ? "online" : "offline");
  for (const key of page.tiles.keys()) updateTile(tileFor(key), key);
}

// -- tiles ------------------------------------------------------------------------------

function deviceBox(device) {
  const id = "device-" + device;
  let box = document.getElementById(id);
  if (!box) {
    box = document.createElement("section");
    box.className = "device";
    box.id = id;
    box.dataset.device = device;
    box.innerHTML = '<h2><span class="name"></span> <span class="badge"></span></h2><div class="tiles"></div>';
    $(".name", box).textContent = device;
    $("#devices").append(box);
  }
  return box;
}

function tileFor(key) {
  const [device, sensor] = key.split("\u0000");
  const box = deviceBox(device);
  let tile = box.querySelector(`article[data-sensor="${CSS.escape(sensor)}"]`);
  if (tile) return tile;
  const kind = kindOf(key, page.tiles.get(key));
  tile = document.createElement("article");
  tile.className = "tile " + kind;
  tile.dataset.device = device;
  tile.dataset.sensor = sensor;
  tile.dataset.kind = kind;
  tile.innerHTML = '<h3></h3><div class="now"><span class="text"></span></div><div class="value"></div>'
    + '<div class="age"></div><div class="error" hidden></div><div class="plot"></div><div class="readout"></div>';
  $("h3", tile).textContent = sensor;
  const own = device === page.info.device;
  if (kind === "output" && own && page.controls.outputs.some((o) => o.name === sensor)) {
    const label = document.createElement("label");
    label.className = "switch";
    label.title = "switch " + sensor;
    const input = document.createElement("input");
    input.type = "checkbox";
    input.dataset.output = sensor;
    input.checked = !!page.controls.outputs.find((o) => o.name === sensor).on;
    input.onchange = async () => {
      const url = `/api/outputs/${encodeURIComponent(sensor)}?action=${input.checked ? "on" : "off"}`;
      if (!(await change(url))) input.checked = !input.checked; // refused: it did not change
    };
    label.append(input, document.createElement("span"));
    $(".now", tile).append(label);
  }
  if (page.info.role === "serve" && own && page.controls.simulate.includes(sensor)) {
    const sim = document.createElement("div");
    sim.className = "sim";
    for (const action of ["press", "release"]) {
      const button = document.createElement("button");
      button.textContent = action === "press" ? "Press" : "Release";
      button.dataset.action = action;
      button.onclick = () => change("/api/sim/" + encodeURIComponent(sensor) + "?action=" + action);
      sim.append(button);
    }
    tile.append(sim);
  }
  $(".tiles", box).append(tile);
  page.plots.set(key, new Plot(tile, key, kind));
  return tile;
}

function updateTile(tile, key) {
  const reading = page.tiles.get(key);
  const kind = tile.dataset.kind;
  const error = errorOf(key);
  $(".error", tile).hidden = !error;
  $(".error", tile).textContent = error || "";
  tile.classList.toggle("failing", !!error);
  if (!reading) {
    $(".text", tile).textContent = error ? "no reading" : "no reading yet";
    $(".age", tile).textContent = "";
    return;
  }
  $(".text", tile).textContent = reading.text;
  // A measurement's number and unit, unless its text says them already ("22.56 °C").
  const plain = kind === "measurement" && !(reading.unit && reading.text.includes(reading.unit));
  $(".value", tile).textContent = plain ? `${reading.value}${reading.unit ? " " + reading.unit : ""}` : "";
  const age = now() - seconds(reading.ts);
  $(".age", tile).textContent = (kind === "measurement" ? "read " : "changed ") + ago(age);
  tile.classList.toggle("active", kind !== "measurement" && reading.value > 0);
  tile.classList.toggle("stale", isStale(key, reading, age));
}

// Why the last read of this input or sensor failed (serve's health says), or null.
function errorOf(key) {
  const [device, sensor] = key.split("\u0000");
  const errors = page.health.errors || {};
  return device === page.info.device && errors[sensor] ? errors[sensor] : null;
}

function staleAfterOf(key) {
  const declared = page.declared.get(key), tile = page.tiles.get(key);
  return (declared && declared.stale_after) || (tile && tile.stale_after) || page.staleAfter;
}

function isStale(key, reading, age) {
  if (!page.online) return true;
  if (kindOf(key, reading) === "measurement" && age > staleAfterOf(key)) return true;
  const streams = page.health.streams || [];
  const link = streams.find((s) => s.device === reading.device && s.connected);
  return streams.some((s) => s.device === reading.device) && !link;
}

function ago(seconds) {
  if (seconds < 60) return `${Math.max(0, Math.round(seconds))} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h ago`;
  return `${(seconds / 86400).toFixed(1)} days ago`;
}

// -- what a plot shows ---------------------------------------------------------------------

// The time shown: the range up to now, or what a drag zoomed into.
function view() {
  if (page.zoom) return page.zoom;
  const end = now();
  return [end - page.range, end];
}

// The readings of a sensor with the one before them (the state it starts in), oldest first.
function history(key) {
  const readings = page.series.get(key) || [];
  const before = page.before.get(key);
  return before && (!readings.length || before.ts < readings[0].ts) ? [before, ...readings] : readings;
}

// The texts of each level (0: "Button released", 1: "Button pressed"): declared, else as read.
function levelsOf(key) {
  const texts = new Map();
  const declared = page.declared.get(key);
  if (declared && declared.levels) declared.levels.forEach((text, value) => texts.set(value, text));
  for (const reading of history(key)) if (!texts.has(Number(reading.value))) texts.set(Number(reading.value), reading.text);
  return texts;
}

// Short level labels for the bars: the words the texts do not share ("pressed", "released").
function labelsOf(key) {
  const texts = levelsOf(key);
  const words = [...texts.values()].map((text) => text.split(" "));
  let common = 0;
  if (words.length > 1) {
    while (words.every((w) => w.length > common + 1 && w[common].toLowerCase() === words[0][common].toLowerCase())) common++;
  }
  const sensor = key.split("\u0000")[1].toLowerCase();
  const labels = new Map();
  for (const [value, text] of texts) {
    let w = text.split(" ").slice(common);
    if (words.length === 1 && w.length > 1 && w[0].toLowerCase() === sensor) w = w.slice(1);
    labels.set(value, w.join(" "));
  }
  return labels;
}

// An on/off sensor's states as bars: [{start, end, value, text}], each held until the next change.
function segmentsOf(key, [from, to]) {
  const readings = history(key);
  const end = now();
  const segments = [];
  for (let i = 0; i < readings.length; i++) {
    const start = seconds(readings[i].ts), value = Number(readings[i].value);
    const last = segments[segments.length - 1];
    if (last && last.value === value) continue; // the same state again is no change
    if (last) last.end = start;
    segments.push({ start, end, value, text: readings[i].text });
  }
  return segments.filter((s) => s.end > from && s.start < to);
}

// Where a history cut by the answer's limit left this sensor's older readings out: up to the
// newest of them (the one its plot starts with), or null. (That one is the state from its time on.)
function unloadedUntil(key) {
  const [asked, complete] = page.loaded, before = page.before.get(key);
  const cut = complete > asked + 1; // (not a clock's rounding between the server and here)
  return cut && before && seconds(before.ts) > asked ? seconds(before.ts) : null;
}

// A measurement's line for uPlot: [times, values, lows, highs]; a null breaks it where no reading
// came for longer than its tile waits before it is stale. Where readings are denser than the pixels,
// each bucket's mean is drawn with its lowest and highest around it.
function lineOf(key, [from, to], buckets) {
  const readings = history(key);
  const gapAfter = staleAfterOf(key);
  const times = readings.map((r) => seconds(r.ts));
  let first = 0, last = times.length - 1;
  while (first < times.length && times[first] < from) first++;
  while (last >= 0 && times[last] > to) last--;
  const shown = Math.max(0, last - first + 1);
  const lo = Math.max(0, first - 1), hi = Math.min(times.length - 1, last + 1);
  const dense = shown > buckets, width = (to - from) / buckets;
  const data = [[], [], [], []], texts = [], gaps = [];
  let bucket = null;
  const flush = () => {
    if (!bucket) return;
    data[0].push(bucket.sum_t / bucket.n);
    data[1].push(bucket.sum / bucket.n);
    data[2].push(bucket.min);
    data[3].push(bucket.max);
    texts.push(null);
    bucket = null;
  };
  let min = null, max = null; // the lowest and highest readings in the range
  for (let i = lo; i <= hi && times.length; i++) {
    const t = times[i], v = Number(readings[i].value);
    if (i > lo && t - times[i - 1] > gapAfter) {
      flush();
      data[0].push((t + times[i - 1]) / 2);
      data[1].push(null); data[2].push(null); data[3].push(null);
      texts.push(null);
      gaps.push([times[i - 1], t]);
    }
    if (t >= from && t <= to) {
      if (!min || v < Number(min.value)) min = readings[i];
      if (!max || v > Number(max.value)) max = readings[i];
    }
    if (dense && t >= from && t <= to) {
      const b = Math.floor((t - from) / width);
      if (bucket && bucket.b !== b) flush();
      bucket = bucket || { b, n: 0, sum: 0, sum_t: 0, min: v, max: v };
      bucket.n++; bucket.sum += v; bucket.sum_t += t;
      bucket.min = Math.min(bucket.min, v); bucket.max = Math.max(bucket.max, v);
    } else {
      flush();
      data[0].push(t); data[1].push(v); data[2].push(null); data[3].push(null);
      texts.push(readings[i]);
    }
  }
  flush();
  // No reading yet in the range, or none since it went stale: no line there either.
  const end = Math.min(to, now());
  if (times.length && end - times[times.length - 1] > gapAfter) gaps.push([times[times.length - 1], end]);
  if (!times.length || times[0] - from > gapAfter) gaps.push([from, times.length ? times[0] : end]);
  return { data, texts, gaps, shown, min, max, dense };
}

// -- plots (uPlot) --------------------------------------------------------------------------

const pad2 = (n) => String(n).padStart(2, "0");

function clock(t, tenths = true) {
  const d = new Date(t * 1000);
  const base = `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  return tenths ? `${base}.${Math.floor(d.getMilliseconds() / 100)}` : base;
}

function duration(s) {
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${(s / 3600).toFixed(1)} h`;
}

function number(v) {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
}

// The time axis in 24-hour time, with seconds when the ticks are less than a minute apart.
function timeAxis() {
  return {
    stroke: COLOURS.axis, font: "11px system-ui", size: 24, gap: 3,
    space: (u, _axis, min, max) => (max - min < 600 ? 64 : 52), // room for the seconds when they show
    grid: { stroke: COLOURS.grid, width: 1 }, ticks: { show: false },
    values: (u, splits, _axis, _space, increment) => splits.map((t) => {
      const d = new Date(t * 1000);
      if (increment >= 86400) return `${d.getMonth() + 1}/${d.getDate()}`;
      return increment < 60 ? clock(t, false) : `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
    }),
  };
}

let hatchPattern = null;

// Where nothing is known (no readings, or not loaded): diagonal grey lines.
function hatch(u, from, to, label) {
  const ctx = u.ctx, { top, height } = u.bbox;
  const x0 = Math.max(u.bbox.left, Math.round(u.valToPos(from, "x", true)));
  const x1 = Math.min(u.bbox.left + u.bbox.width, Math.round(u.valToPos(to, "x", true)));
  if (x1 - x0 < 1) return;
  if (!hatchPattern) {
    const tile = document.createElement("canvas");
    tile.width = tile.height = 8;
    const c = tile.getContext("2d");
    c.strokeStyle = "#ced4da";
    c.beginPath(); c.moveTo(0, 8); c.lineTo(8, 0); c.stroke();
    hatchPattern = ctx.createPattern(tile, "repeat");
  }
  ctx.fillStyle = hatchPattern;
  ctx.fillRect(x0, top, x1 - x0, height);
  ctx.font = `${Math.round(11 * uPlot.pxRatio)}px system-ui`;
  ctx.textAlign = "left";
  const width = ctx.measureText(label).width;
  if (x1 - x0 > width + 8) {
    ctx.fillStyle = COLOURS.axis;
    ctx.textBaseline = "middle";
    ctx.fillText(label, x0 + 4, top + height / 2);
  }
}

class Plot {
  constructor(tile, key, kind) {
    this.key = key;
    this.timeline = kind !== "measurement";
    this.box = $(".plot", tile);
    this.readout = $(".readout", tile);
    this.segments = [];
    this.line = null;
    this.pending = false;
    this.u = new uPlot(this.timeline ? this.timelineOptions() : this.lineOptions(), [[], []], this.box);
    new ResizeObserver(() => this.resize()).observe(this.box);
    this.update();
  }

  size() {
    return { width: Math.max(100, this.box.clientWidth), height: this.timeline ? 58 : 140 };
  }

  common() {
    return {
      ...this.size(),
      padding: [6, null, 0, this.timeline ? 2 : 0],  // on the right, room for the last time
      legend: { show: false },
      cursor: {
        sync: { key: SYNC },
        drag: { x: true, y: false, setScale: false, dist: 4 },
        y: false,
        points: { show: false },
        bind: { dblclick: () => () => { unzoom(); return null; } },
      },
      hooks: {
        setSelect: [(u) => this.selected(u)],
        setCursor: [(u) => this.hover(u)],
      },
    };
  }

  timelineOptions() {
    const options = this.common();
    options.scales = { x: { time: true, auto: false }, y: { auto: false, range: [0, 1] } };
    options.axes = [timeAxis(), { show: false }];
    options.series = [{}, { paths: () => null, points: { show: false } }];
    options.hooks.draw = [(u) => this.drawTimeline(u)];
    return options;
  }

  lineOptions() {
    const options = this.common();
    const unit = (page.declared.get(this.key) || page.tiles.get(this.key) || {}).unit;
    // A value that did not move gets a degree or so around it, not a scale from zero.
    const range = (u, min, max) => (min == null ? [0, 1] : min === max ? [min - 1, max + 1]
      : [min - (max - min) * 0.1, max + (max - min) * 0.1]);
    options.scales = { x: { time: true, auto: false }, y: { range } };
    options.axes = [timeAxis(), {
      stroke: COLOURS.axis, font: "11px system-ui", size: 46, gap: 3, grid: { stroke: COLOURS.grid, width: 1 },
      ticks: { show: false },
      values: (u, splits) => (this.line && this.line.shown ? splits.map((v) => number(v) + (unit ? " " + unit : "")) : []),
    }];
    options.series = [
      {},
      { stroke: COLOURS.line, width: 1.5, points: { size: 4, fill: COLOURS.line } },
      { stroke: "transparent", width: 0, points: { show: false } },  // the lowest of each bucket
      { stroke: "transparent", width: 0, points: { show: false } },  // the highest
    ];
    options.bands = [{ series: [3, 2], fill: COLOURS.band }];
    options.hooks.draw = [(u) => this.drawGaps(u)];
    return options;
  }

  resize() {
    const { width, height } = this.size();
    if (width !== this.u.width) this.u.setSize({ width, height });
  }

  // A reading came: draw it in the next frame (many at once cost one drawing).
  changed() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.update(); });
  }

  update() {
    const shown = view();
    if (this.timeline) {
      this.segments = segmentsOf(this.key, shown);
      this.u.setData([shown, [null, null]], false);
    } else {
      this.line = lineOf(this.key, shown, Math.max(10, Math.floor(this.u.bbox.width / uPlot.pxRatio / 3)));
      this.u.setData(this.line.data.length && this.line.data[0].length ? this.line.data : [[], [], [], []]);
    }
    this.u.setScale("x", { min: shown[0], max: shown[1] });
    if (!this.hovering) this.readout.textContent = this.summary();
  }

  // What the range holds: "150× pressed, 25 % of the time"; "min 41.20 °C · max 46.80 °C · 120 readings".
  summary() {
    const [from, to] = view();
    if (this.timeline) {
      if (!this.segments.length) return "no readings in this range";
      const labels = labelsOf(this.key);
      const label = (v) => labels.get(v) ?? String(v);
      const values = new Set(this.segments.map((s) => s.value));
      if (values.size === 1) {
        const first = this.segments[0];
        return first.start <= from + 1 ? `${label(first.value)} throughout` : `${label(first.value)} since ${clock(first.start, false)}`;
      }
      let active = 0, known = 0, count = 0;
      for (const s of this.segments) {
        const span = Math.min(s.end, to) - Math.max(s.start, from);
        known += span;
        if (s.value > 0) { active += span; if (s.start >= from) count++; }
      }
      const activeLabel = label(Math.max(...values));
      return `${count}× ${activeLabel}, ${Math.round((100 * active) / known)} % of the time`;
    }
    const line = this.line;
    if (!line.shown) return "no readings in this range";
    return `min ${line.min.text} · max ${line.max.text} · ${line.shown} reading${line.shown === 1 ? "" : "s"}`;
  }

  // The value under the pointer (every plot shows the one at the same time).
  hover(u) {
    const left = u.cursor.left;
    this.hovering = left != null && left >= 0;
    if (!this.hovering) { this.readout.textContent = this.summary(); return; }
    const t = u.posToVal(left, "x");
    this.readout.textContent = this.timeline ? this.stateAt(t) : this.valueAt(u, t);
  }

  stateAt(t) {
    const s = this.segments.find((s) => s.start <= t && t < s.end);
    if (!s) return `nothing known at ${clock(t)}`;
    const until = s.end >= now() - 0.5 ? "now" : clock(s.end);
    return `${s.text} · ${clock(s.start)} – ${until} (${duration(s.end - s.start)})`;
  }

  valueAt(u, t) {
    const i = u.cursor.idx;
    const [times, means, lows, highs] = this.line.data;
    if (i == null || means[i] == null) return `no readings at ${clock(t)}`;
    const unit = (page.tiles.get(this.key) || {}).unit || "";
    if (lows[i] != null) {
      return `${number(lows[i])} to ${number(highs[i])}${unit ? " " + unit : ""}, mean ${number(means[i])} · around ${clock(times[i], false)}`;
    }
    return `${this.line.texts[i].text} · ${clock(times[i])}`;
  }

  selected(u) {
    if (u.select.width < 3) return;
    const from = u.posToVal(u.select.left, "x"), to = u.posToVal(u.select.left + u.select.width, "x");
    u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    zoom([from, to]);
  }

  drawTimeline(u) {
    const ctx = u.ctx, { left, top, width, height } = u.bbox;
    const [from, to] = [u.scales.x.min, u.scales.x.max];
    const x = (t) => Math.round(u.valToPos(Math.min(Math.max(t, from), to), "x", true));
    const pr = uPlot.pxRatio;
    const laneTop = Math.round(top + 3 * pr), laneHeight = Math.round(height - 6 * pr);
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    const first = this.segments.length ? this.segments[0].start : to;
    const unloaded = unloadedUntil(this.key);
    if (unloaded) hatch(u, from, unloaded, "older readings not loaded");
    else if (first > from) hatch(u, from, first, "no readings");
    const labels = labelsOf(this.key);
    // The lowest level first, then the others over it, each at least a pixel wide: a
    // 1 s press every 4 s stays a bar of its own at any range.
    for (const top_ of [false, true]) {
      for (const s of this.segments) {
        if ((s.value > 0) !== top_) continue;
        const least = top_ ? Math.ceil(pr) : 0; // (one that began a moment ago too, at the right edge)
        const x0 = Math.min(x(s.start), Math.floor(left + width) - least);
        const x1 = Math.max(x(s.end), x0 + least);
        ctx.fillStyle = s.value <= 0 ? COLOURS.off : s.value >= 1 ? COLOURS.on : `rgba(47, 158, 68, ${0.3 + 0.7 * s.value})`;
        ctx.fillRect(x0, laneTop, x1 - x0, laneHeight);
      }
    }
    ctx.font = `${Math.round(11 * pr)}px system-ui`;
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    for (const s of this.segments) {
      const x0 = x(s.start), x1 = x(s.end);
      const label = s.value > 0 && s.value < 1 ? s.text : labels.get(s.value) ?? String(s.value);
      if (x1 - x0 > ctx.measureText(label).width + 8 * pr) {
        ctx.fillStyle = s.value > 0 ? "#fff" : "#343a40";
        ctx.fillText(label, x0 + 4 * pr, laneTop + laneHeight / 2);
      }
    }
    ctx.restore();
  }

  drawGaps(u) {
    const ctx = u.ctx;
    ctx.save();
    ctx.beginPath();
    ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
    ctx.clip();
    const [from] = [u.scales.x.min];
    const unloaded = unloadedUntil(this.key);
    if (unloaded) hatch(u, from, unloaded, "older readings not loaded");
    for (const [a, b] of this.line.gaps) if (!unloaded || a >= unloaded) hatch(u, a, b, "no readings");
    ctx.restore();
  }
}

function zoom(range) {
  page.zoom = range;
  $("#unzoom").hidden = false;
  for (const plot of page.plots.values()) plot.update();
}

function unzoom() {
  page.zoom = null;
  $("#unzoom").hidden = true;
  for (const plot of page.plots.values()) plot.update();
}

// Readings that left the range on the left: the newest of them is the state a plot starts in.
function trim() {
  if (page.zoom) return;
  const start = now() - page.range;
  for (const [key, readings] of page.series) {
    let n = 0;
    while (n < readings.length && seconds(readings[n].ts) < start) n++;
    if (n) page.before.set(key, readings.splice(0, n).pop());
  }
}

// -- changes (simulated inputs, outputs) -------------------------------------------------

async function change(url) {
  // The custom header is what keeps another site's page from doing this.
  const response = await fetch(url, { method: "POST", headers: { "X-Rpisensor": "1" } });
  const body = await response.json();
  $("#message").textContent = response.ok ? "" : body.error;
  return response.ok;
}

// -- health and the fleet -------------------------------------------------------------------

// "2 gaps, latest: 5–9 (outbox full); 12–12 (power cut)": entries that will never arrive.
function describeGaps(gaps) {
  if (!gaps || !gaps.count) return "no gaps";
  const latest = gaps.latest.map((g) => `${g.from}–${g.to} (${g.reason})`).join("; ");
  return `${gaps.count} gap${gaps.count === 1 ? "" : "s"}, latest: ${latest}`;
}

function renderHealth() {
  const rows = [];
  const h = page.health;
  if (h.journal) {
    rows.push(["journal", `entries ${h.journal.first} to ${h.journal.last} (${h.journal.rows} kept)`]);
    rows.push(["gaps", describeGaps(h.journal.gaps)]);
    rows.push(["subscribers", h.subscribers], ["connections", h.connections], ["web pages", h.pages]);
    const failing = Object.keys(h.errors || {});
    rows.push(["failing reads", failing.length ? failing.join(", ") : "none"]);
  }
  if (h.connections != null && !h.journal) rows.push(["connections", h.connections]);
  const list = $("#health dl");
  list.replaceChildren();
  for (const [term, text] of rows) {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = term;
    dd.textContent = text;
    list.append(dt, dd);
  }
  $("#health").hidden = !rows.length;
  for (const key of page.tiles.keys()) updateTile(tileFor(key), key);
  for (const key of page.declared.keys()) updateTile(tileFor(key), key);
  renderFleet();
}

// On a receiving role (collect, poll --subscribe): a row per device, its link, newest readings and gaps.
function renderFleet() {
  const streams = page.health.streams;
  $("#fleet").hidden = !streams;
  if (!streams) return;
  const devices = new Map();
  const of = (device) => devices.get(device) || devices.set(device, { streams: [], readings: [] }).get(device);
  for (const stream of streams) of(stream.device).streams.push(stream);
  for (const reading of page.tiles.values()) of(reading.device).readings.push(reading);
  const body = $("#fleet tbody");
  body.replaceChildren();
  for (const device of [...devices.keys()].sort()) {
    const { streams, readings } = devices.get(device);
    const connected = streams.filter((s) => s.connected);
    const row = document.createElement("tr");
    row.dataset.device = device;
    row.className = connected.length ? "connected" : "down";
    const name = document.createElement("a");
    name.href = "#device-" + encodeURIComponent(device);
    name.textContent = device;
    const link = connected.length
      ? "connected" + (connected[0].peer ? " from " + connected[0].peer : "")
      : streams.length ? "not connected" : "no stream since the start";
    const acked = connected.length ? ` · ${connected[0].acked} acknowledged` : "";
    const newest = document.createElement("div");
    newest.className = "newest";
    for (const reading of readings.sort((a, b) => a.sensor.localeCompare(b.sensor))) {
      const item = document.createElement("span");
      const age = now() - seconds(reading.ts);
      item.className = "reading" + (isStale(keyOf(reading), reading, age) ? " stale" : "");
      item.innerHTML = "<b></b> <span></span> <i></i>";
      $("b", item).textContent = reading.sensor;
      $("span", item).textContent = reading.text;
      $("i", item).textContent = ago(age);
      newest.append(item);
    }
    const gaps = fleetGaps(streams);
    const cells = [0, 1, 2, 3].map(() => document.createElement("td"));
    cells[0].append(name);
    cells[2].append(newest);
    cells[1].textContent = link + acked;
    cells[1].className = "link-state";
    cells[3].textContent = gaps;
    cells[3].className = "gaps" + (streams.some((s) => s.gaps && s.gaps.count) ? " some" : "");
    row.append(...cells);
    body.append(row);
    const box = deviceBox(device);
    $("#devices").append(box); // the tiles in the order of the rows
    const badge = $(".badge", box);
    badge.textContent = connected.length ? "connected" : "not connected";
    badge.className = "badge " + (connected.length ? "connected" : "down");
  }
}

// A device's gaps over all its streams (a reporter without an outbox file starts a new one each
// time): their count, and the latest, each named by its stream when more than one has some.
function fleetGaps(streams) {
  const gapped = streams.filter((s) => s.gaps && s.gaps.count);
  if (gapped.length <= 1) return describeGaps(gapped[0] && gapped[0].gaps);
  return gapped.map((s) => `stream ${s.stream.slice(0, 6)}: ${describeGaps(s.gaps)}`).join(" · ");
}

function render() {
  $("#title").textContent = `rpisensor ${page.info.role}` + (page.info.device ? ` · ${page.info.device}` : "");
  for (const key of page.declared.keys()) tileFor(key); // every declared one has a tile, read or not
  for (const key of page.tiles.keys()) tileFor(key);
  for (const key of page.before.keys()) tileFor(key);
  trim();
  for (const plot of page.plots.values()) plot.update();
  renderHealth();
}

// For tests and the curious: the readings each plot holds, and the plots.
window.rpisensor = {
  page,
  points: (device, sensor) => history(device + "\u0000" + sensor),
  plot: (device, sensor) => page.plots.get(device + "\u0000" + sensor),
  zoom,
  unzoom,
};

document.addEventListener("DOMContentLoaded", () => {
  $("#range").onchange = async (event) => {
    page.range = Number(event.target.value);
    page.zoom = null;
    $("#unzoom").hidden = true;
    await loadHistory();
    render();
  };
  $("#unzoom").onclick = unzoom;
  setInterval(() => { if (page.info.role) render(); }, 1000);
  load().catch((error) => { $("#message").textContent = "could not load: " + error.message; });
});
