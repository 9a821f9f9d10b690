#!/bin/sh
# PID 1 of the UML guest that guest.py boots. The guest's root is the host's / over hostfs,
# read-only; this mounts the guest's own /proc, /sys, configfs, /tmp and /run, makes the
# results directory (a host directory) writable, creates the gpio-sim chips, runs ONE Python
# process (guest_run.py: pytest on the job's test files) and powers off.
#
# The kernel command line gives RPISENSOR_UML_RESULTS (the kernel hands init the parameters it
# does not know as environment variables); everything else is in $RPISENSOR_UML_RESULTS/job.env,
# written by guest.py. What the tests get is described in tests/uml/README.md.
#
# Only shell builtins in loops: every process started inside UML costs milliseconds.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
RESULTS=$RPISENSOR_UML_RESULTS

power_off() {
    sync
    poweroff -f 2>/dev/null
    echo o > /proc/sysrq-trigger    # reboot(2) through sysrq: UML exits 0
    sleep 60                        # PID 1 must not exit (UML would abort)
}

fatal() {
    echo "rpisensor-uml init: $*"
    echo "$*" > "$RESULTS/init-error" 2>/dev/null
    power_off
}

mount -t proc proc /proc || fatal "cannot mount /proc"
read uptime idle < /proc/uptime
mount -t sysfs sysfs /sys || fatal "cannot mount /sys"
mount -t configfs configfs /sys/kernel/config || fatal "cannot mount configfs"
[ -c /dev/null ] || mount -t devtmpfs devtmpfs /dev || fatal "cannot mount /dev"
mount -t tmpfs -o mode=1777 tmpfs /tmp || fatal "cannot mount /tmp"
mount -t tmpfs -o mode=755 tmpfs /run || fatal "cannot mount /run"

# The results directory may lie under /tmp, now the guest's own tmpfs: make the mount point
# there, then put the host directory on it.
mkdir -p "$RESULTS" && mount -t hostfs -o "$RESULTS" hostfs "$RESULTS" \
    || fatal "cannot mount the results directory $RESULTS"
set -a; . "$RESULTS/job.env" || fatal "cannot read $RESULTS/job.env"
set +a
echo "$uptime" > "$RESULTS/init-uptime"

# A checkout under /tmp or /run (a CI clone, say) is hidden by the guest's own tmpfs: put the
# host directory back on a mount point there, read-only like the rest of the host.
if [ ! -d "$RPISENSOR_UML_CHECKOUT/tests/uml" ]; then
    mkdir -p "$RPISENSOR_UML_CHECKOUT" \
        && mount -t hostfs -o ro,"$RPISENSOR_UML_CHECKOUT" hostfs "$RPISENSOR_UML_CHECKOUT" \
        || fatal "cannot mount the checkout $RPISENSOR_UML_CHECKOUT"
fi

RUN=/run/rpisensor-uml
mkdir -p "$RUN"
CHIPS_JSON=$RUN/chips.json
separator=""
printf '{"chips": [' > "$CHIPS_JSON"

# make_chip NAME LABEL NUM_LINES LINE_PREFIX: one gpio-sim device with one bank whose lines
# are named LINE_PREFIX0, LINE_PREFIX1, ...; sets CHIP_PATH, SIM_DIR, LINE_NAMES.
make_chip() {
    sim=/sys/kernel/config/gpio-sim/$1
    bank=$sim/gpio-bank0
    mkdir "$sim" "$bank" || fatal "cannot create gpio-sim device $1"
    echo "$3" > "$bank/num_lines"
    echo "$2" > "$bank/label"
    i=0
    dirs=""
    LINE_NAMES=""
    names_json=""
    while [ "$i" -lt "$3" ]; do
        dirs="$dirs $bank/line$i"
        LINE_NAMES="$LINE_NAMES $4$i"
        names_json="$names_json${names_json:+, }\"$4$i\""
        i=$((i + 1))
    done
    LINE_NAMES=${LINE_NAMES# }
    mkdir $dirs || fatal "cannot create the lines of $1"
    i=0
    for name in $LINE_NAMES; do
        echo "$name" > "$bank/line$i/name"
        i=$((i + 1))
    done
    echo 1 > "$sim/live" || fatal "gpio-sim device $1 did not go live"
    read chip_name < "$bank/chip_name"
    read dev_name < "$sim/dev_name"
    CHIP_PATH=/dev/$chip_name
    SIM_DIR=/sys/devices/platform/$dev_name/$chip_name
    [ -c "$CHIP_PATH" ] || fatal "gpio-sim device $1 went live but $CHIP_PATH is missing"
    printf '%s{"name": "%s", "label": "%s", "path": "%s", "sim_dir": "%s", "line_names": [%s]}' \
        "$separator" "$1" "$2" "$CHIP_PATH" "$SIM_DIR" "$names_json" >> "$CHIPS_JSON"
    separator=", "
}

# A chip that is not the header comes first, so the header's is not gpiochip0 and a test
# finds it by its label (a Pi 5's header moved from gpiochip4 to gpiochip0 in kernel 6.6).
make_chip other "$RPISENSOR_UML_OTHER_LABEL" 8 other
make_chip header "$RPISENSOR_UML_HEADER_LABEL" "$RPISENSOR_UML_HEADER_LINES" GPIO
printf '], "header": "header"}\n' >> "$CHIPS_JSON"
read uptime idle < /proc/uptime
echo "$uptime" > "$RESULTS/chips-uptime"

export RPISENSOR_UML_GUEST=1
export RPISENSOR_UML_CHIPS=$CHIPS_JSON
export RPISENSOR_UML_CHIP=$CHIP_PATH
export RPISENSOR_UML_CHIP_LABEL=$RPISENSOR_UML_HEADER_LABEL
export RPISENSOR_UML_SIM_DIR=$SIM_DIR
export RPISENSOR_UML_LINE_NAMES=$LINE_NAMES
export HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1

cd "$RPISENSOR_UML_CHECKOUT" || fatal "cannot enter the checkout $RPISENSOR_UML_CHECKOUT"
"$RPISENSOR_UML_PYTHON" "$RPISENSOR_UML_CHECKOUT/tests/uml/guest_run.py" > "$RESULTS/pytest-output.txt" 2>&1
echo "$?" > "$RESULTS/exit-status"

for sim in /sys/kernel/config/gpio-sim/*; do
    echo 0 > "$sim/live"
done
power_off
