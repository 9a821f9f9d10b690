// rpisensor's page: tiles and plots of every sensor, kept live with Server-Sent Events.
// No libraries and no build step: the plots are drawn on <canvas> here.
"use strict";

const page = {
  tiles: new Map(),    // "device\0sensor" -> the latest reading
  series: new Map(),   // "device\0sensor" -> readings in the range, oldest first
  last: 0,             // the id of the newest reading the page has
  range: 600,          // seconds of history shown
  offset: 0,           // the server's clock minus ours, in milliseconds
  online: false,
  health: {},
  controls: { simulate: [], outputs: [] },
  info: {},
  source: null,
};

const keyOf = (r) => r.device + "\u0000" + r.sensor;
const now = () => Date.now() + page.offset;
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
  for (const tile of state.tiles) page.tiles.set(keyOf(tile), tile);
  page.last = Math.max(page.last, state.last);
  await loadHistory();
  render();
  renderOutputs();
  follow();
}

async function loadHistory() {
  const history = await getJSON("/api/readings?window=" + page.range);
  const live = [...page.series.values()].flat().filter((r) => r.id > history.last);
  page.series = new Map();
  for (const reading of history.readings.concat(live)) addPoint(reading);
  for (const reading of history.readings) showReading(reading);
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
  page.series.get(key).push(reading);
}

function showReading(reading) {
  const key = keyOf(reading);
  const known = page.tiles.get(key);
  if (!known || Date.parse(reading.ts) >= Date.parse(known.ts)) {
    page.tiles.set(key, { ...known, ...reading, kind: known ? known.kind : kindOf(reading) });
  }
  const tile = tileFor(page.tiles.get(key));
  updateTile(tile, page.tiles.get(key));
  draw(tile, key);
  // An output's change is a reading too: its switch follows it, whoever switched it.
  const toggle = document.querySelector(`#outputs input[data-output="${CSS.escape(reading.sensor)}"]`);
  if (toggle && reading.device === page.info.device) toggle.checked = reading.value > 0;
}

// As the server decides (api.py): no unit and a value of 0 or 1 is a digital input.
const kindOf = (reading) => (reading.unit == null && (reading.value === 0 || reading.value === 1) ? "digital" : "measurement");

function setOnline(online) {
  page.online = online;
  const link = $("#link");
  link.textContent = online ? "live" : "reconnecting…";
  link.className = "link " + (online ? "online" : "offline");
  for (const [key, reading] of page.tiles) updateTile(tileFor(reading), reading);
}

// -- tiles ------------------------------------------------------------------------------

function deviceBox(device) {
  const id = "device-" + device;
  let box = document.getElementById(id);
  if (!box) {
    box = document.createElement("div");
    box.className = "device";
    box.id = id;
    box.innerHTML = '<h2></h2><div class="tiles"></div>';
    $("h2", box).textContent = device;
    $("#devices").append(box);
  }
  return box;
}

function tileFor(reading) {
  const box = deviceBox(reading.device);
  let tile = box.querySelector(`article[data-sensor="${CSS.escape(reading.sensor)}"]`);
  if (tile) return tile;
  tile = document.createElement("article");
  tile.className = "tile";
  tile.dataset.device = reading.device;
  tile.dataset.sensor = reading.sensor;
  tile.innerHTML = '<h3></h3><div class="text"></div><div class="value"></div>'
    + '<div class="age"></div><canvas data-points="0"></canvas>';
  $("h3", tile).textContent = reading.sensor;
  if (page.info.role === "serve" && page.controls.simulate.includes(reading.sensor)) {
    const sim = document.createElement("div");
    sim.className = "sim";
    for (const action of ["press", "release"]) {
      const button = document.createElement("button");
      button.textContent = action === "press" ? "Press" : "Release";
      button.dataset.action = action;
      button.onclick = () => change("/api/sim/" + encodeURIComponent(reading.sensor) + "?action=" + action);
      sim.append(button);
    }
    tile.append(sim);
  }
  $(".tiles", box).append(tile);
  return tile;
}

function updateTile(tile, reading) {
  $(".text", tile).textContent = reading.text;
  // A measurement's number and unit, unless its text says them already ("22.56 °C").
  const plain = reading.kind === "measurement" && !(reading.unit && reading.text.includes(reading.unit));
  $(".value", tile).textContent = plain ? `${reading.value}${reading.unit ? " " + reading.unit : ""}` : "";
  const age = (now() - Date.parse(reading.ts)) / 1000;
  $(".age", tile).textContent = (reading.kind === "digital" ? "changed " : "read ") + ago(age);
  tile.classList.toggle("active", reading.kind === "digital" && reading.value === 1);
  tile.classList.toggle("stale", isStale(reading, age));
}

function isStale(reading, age) {
  if (!page.online) return true;
  if (reading.stale_after != null && age > reading.stale_after) return true;
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

// -- plots --------------------------------------------------------------------------------

function draw(tile, key) {
  const canvas = $("canvas", tile);
  const width = canvas.width = canvas.clientWidth * devicePixelRatio;
  const height = canvas.height = canvas.clientHeight * devicePixelRatio;
  const context = canvas.getContext("2d");
  const end = now(), start = end - page.range * 1000;
  const points = (page.series.get(key) || []).filter((r) => Date.parse(r.ts) >= start);
  canvas.dataset.points = points.length;
  drawAxis(context, width, height);
  if (!points.length) return;
  const digital = page.tiles.get(key).kind === "digital";
  const values = points.map((r) => Number(r.value));
  let low = digital ? 0 : Math.min(...values), high = digital ? 1 : Math.max(...values);
  if (high === low) { high += 1; low -= 1; }
  const pad = 8 * devicePixelRatio;
  const x = (ts) => ((Date.parse(ts) - start) / (end - start)) * width;
  const y = (v) => height - pad - ((v - low) / (high - low)) * (height - 2 * pad);
  context.lineWidth = 2 * devicePixelRatio;
  context.strokeStyle = "#1971c2";
  context.beginPath();
  points.forEach((r, i) => {
    if (i === 0) context.moveTo(x(r.ts), y(r.value));
    else if (digital) { context.lineTo(x(r.ts), y(points[i - 1].value)); context.lineTo(x(r.ts), y(r.value)); }
    else context.lineTo(x(r.ts), y(r.value));
  });
  if (digital) context.lineTo(width, y(points[points.length - 1].value)); // holds until it changes
  context.stroke();
  context.fillStyle = "#1971c2";
  for (const r of points) context.fillRect(x(r.ts) - pad / 3, y(r.value) - pad / 3, pad / 1.5, pad / 1.5);
  if (!digital) {
    context.fillStyle = "#495064";
    context.font = `${11 * devicePixelRatio}px system-ui`;
    context.fillText(String(high), 2, pad + 4);
    context.fillText(String(low), 2, height - 2);
  }
}

function drawAxis(context, width, height) {
  // Quarters of the range, and how far back each is.
  context.strokeStyle = "#dee2e6";
  context.fillStyle = "#868e96";
  context.lineWidth = devicePixelRatio;
  context.font = `${10 * devicePixelRatio}px system-ui`;
  for (let i = 1; i <= 4; i++) {
    const x = (width * i) / 4;
    context.beginPath();
    context.moveTo(x, 0);
    context.lineTo(x, height);
    context.stroke();
    const back = page.range * (1 - i / 4);
    const label = i === 4 ? "now" : back >= 3600 ? `-${back / 3600} h` : back >= 60 ? `-${back / 60} min` : `-${back} s`;
    context.fillText(label, x - context.measureText(label).width - 3, height - 3);
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

function renderOutputs() {
  const outputs = page.controls.outputs;
  $("#outputs").hidden = !outputs.length;
  const box = $("#outputs .switches");
  box.replaceChildren();
  for (const output of outputs) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.dataset.output = output.name;
    input.checked = !!output.on;
    input.onchange = async () => {
      const url = `/api/outputs/${encodeURIComponent(output.name)}?action=${input.checked ? "on" : "off"}`;
      if (!(await change(url))) input.checked = !input.checked; // refused: it did not change
    };
    label.append(input, " " + output.name);
    box.append(label);
  }
}

// -- health -------------------------------------------------------------------------------

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
  }
  for (const s of h.streams || []) {
    rows.push([s.device, `${s.connected ? "connected" : "not connected"}${s.peer ? " from " + s.peer : ""},`
      + ` last acknowledged ${s.acked}, ${describeGaps(s.gaps)}`]);
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
  for (const [key, reading] of page.tiles) updateTile(tileFor(reading), reading);
}

function render() {
  $("#title").textContent = `rpisensor ${page.info.role}` + (page.info.device ? ` · ${page.info.device}` : "");
  for (const [key, reading] of page.tiles) {
    const tile = tileFor(reading);
    updateTile(tile, reading);
    draw(tile, key);
  }
  renderHealth();
}

// For tests and the curious: the readings each plot holds.
window.rpisensor = { page, points: (device, sensor) => page.series.get(device + "\u0000" + sensor) || [] };

document.addEventListener("DOMContentLoaded", () => {
  $("#range").onchange = async (event) => {
    page.range = Number(event.target.value);
    await loadHistory();
    render();
  };
  setInterval(render, 1000);
  load().catch((error) => { $("#message").textContent = "could not load: " + error.message; });
});
