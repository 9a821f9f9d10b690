#!/usr/bin/env bash
# Build, once, the User-Mode Linux (UML) kernel the kernel-GPIO tests boot: Debian's
# linux-source-6.1 with gpio-sim, the GPIO character device and hostfs, its tick raised to
# 1000 Hz and its FP-register restore fixed for hosts with AMX. A UML kernel is an ordinary
# program, so the real GPIO stack runs on a machine (or CI runner) that has none. See
# tests/uml/README.md for how the tests use it.
#
# The kernel is cached outside the checkout, keyed by what decides its contents: the host
# architecture, the linux-source-6.1 package version, kernel.config and the patches. A
# second run finds it and takes seconds; a changed key builds a new one beside the old.
#
# Before it says a kernel is ready, it boots it once with a trivial init (smoke-init.sh): a
# kernel that cannot run a process on this host's CPU makes this script exit 2, naming the
# CPU, so the tests skip saying why instead of failing. The outcome is kept beside the kernel,
# per CPU, and --print-kernel repeats it.
#
# It also prepares the Python the guest runs: the guest sees the host's / as its root, so it
# runs this checkout's own venv interpreter, which needs the gpiod wheel (libgpiod v2).
#
# Usage: build-kernel.sh                 build if needed, prepare the venv, print the kernel
#        build-kernel.sh --print-kernel  print the cached kernel for the current key; build nothing
# Exit:  0 ready (the kernel's path is the last line of output); 2 cannot build or run here
#        (the reason is printed; the tests then skip with it); 1 something failed.
# Env:   RPISENSOR_UML_CACHE  cache directory (default ${XDG_CACHE_HOME:-~/.cache}/rpisensor-uml)
#        RPISENSOR_UML_VENV   the venv the guest runs (default: the checkout's .venv; created
#                             if missing, as the README's test command would)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CHECKOUT=$(cd "$HERE/../.." && pwd)
CACHE=${RPISENSOR_UML_CACHE:-${XDG_CACHE_HOME:-${HOME:-$(cd ~ && pwd)}/.cache}/rpisensor-uml}
VENV=${RPISENSOR_UML_VENV:-$CHECKOUT/.venv}
SOURCE_PACKAGE=linux-source-6.1
TARBALL=/usr/src/$SOURCE_PACKAGE.tar.xz
BUILD_PACKAGES="$SOURCE_PACKAGE bc flex bison build-essential libelf-dev libssl-dev xz-utils"
# Applied with patch -p1, in this order; each is part of the cache key.
PATCHES="hz-1000.patch xstate-restore.patch"
GPIOD_REQUIREMENT='gpiod>=2.2'
# rpi-lgpio provides the RPi.GPIO module on top of lgpio (what a Pi 5 needs); it goes into a
# directory of its own in the venv, so it does not replace the real RPi.GPIO the emulated-Pi
# tests use. Wheels for both: no compiler.
LGPIO_REQUIREMENTS='rpi-lgpio==0.6 lgpio==0.2.2.0'
WORK=""    # the build tree while a build runs; removed however the script ends
trap '[ -z "$WORK" ] || rm -rf "$WORK"' EXIT

say() { echo "build-kernel: $*"; }
cannot() { echo "build-kernel: cannot build the UML kernel here: $*" >&2; exit 2; }
fail() { echo "build-kernel: FAILED: $*" >&2; exit 1; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing_packages() {
    local p missing=""
    for p in $BUILD_PACKAGES; do installed "$p" || missing="$missing $p"; done
    echo "${missing# }"
}

check_host() {
    [ "$(uname -s)" = Linux ] || cannot "User-Mode Linux runs on Linux only (this is $(uname -s))"
    [ "$(uname -m)" = x86_64 ] || cannot "this recipe builds an x86_64 UML kernel (this is $(uname -m))"
    command -v dpkg-query >/dev/null || cannot "it uses Debian's $SOURCE_PACKAGE package, and this system has no dpkg"
}

# What the cache key is made of, as text (kept beside the kernel so a person can read it).
key_text() {
    echo "arch $(uname -m)"
    echo "source $SOURCE_PACKAGE $(dpkg-query -W -f='${Version}' "$SOURCE_PACKAGE")"
    echo "--- kernel.config"
    cat "$HERE/kernel.config"
    local patch
    for patch in $PATCHES; do
        echo "--- $patch"
        cat "$HERE/$patch"
    done
}

cache_entry() { echo "$CACHE/linux-$(key_text | sha256sum | cut -c1-16)"; }

print_kernel() {
    check_host
    installed "$SOURCE_PACKAGE" || { echo "build-kernel: the UML kernel is not built ($SOURCE_PACKAGE is not installed)" >&2; exit 2; }
    local entry
    entry=$(cache_entry)
    [ -x "$entry/linux" ] || { echo "build-kernel: the UML kernel is not built for the current key (no $entry)" >&2; exit 2; }
    smoke_boot "$entry"
    echo "$entry/linux"
}

# The host's CPU as the smoke boot's record names it: its model and the flags that decide how
# its FP/vector registers are saved (the XSAVE area's size).
cpu_text() {
    local model flags
    model=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^model name[[:space:]]*: //')
    flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' \
        | grep -E '^(xsave|xsaveopt|xsavec|xsaves|avx|avx2|avx512f|amx_[a-z0-9]+|pku)$' | tr '\n' ' ')
    echo "$model; flags: ${flags% }"
}

# Where UML may keep the guest's memory: a tmpfs that allows executable mappings, else /tmp.
memory_dir() {
    if grep -qE '^[^ ]+ /dev/shm tmpfs ' /proc/mounts && ! grep -E '^[^ ]+ /dev/shm tmpfs ' /proc/mounts | grep -q noexec \
        && [ -w /dev/shm ]; then
        echo /dev/shm
    else
        echo "${TMPDIR:-/tmp}"
    fi
}

# Boot the kernel in ENTRY once on this CPU with smoke-init.sh as PID 1; remember the outcome
# per CPU beside the kernel. Exit 2 with the reason when it cannot run a process here.
smoke_boot() {
    local entry=$1 record console status cpu
    cpu=$(cpu_text)
    record="$entry/smoke-$(echo "$cpu" | sha256sum | cut -c1-16)"
    if [ ! -f "$record" ]; then
        console=$(mktemp)
        status=0
        # In a subshell, whose stderr is the console too: bash's own "Aborted" line lands there.
        (TMPDIR=$(memory_dir) timeout 60 "$entry/linux" mem=64M root=/dev/root rootfstype=hostfs rootflags=/ ro \
            "init=$HERE/smoke-init.sh" con=null ssl=null con0=fd:0,fd:1 loglevel=4 \
            < /dev/null; exit $?) > "$console" 2>&1 || status=$?
        if grep -q 'rpisensor-uml smoke: floating point ok' "$console"; then
            echo ok > "$record"
        else
            {
                echo "the UML kernel cannot run a process on this host's CPU ($cpu): its smoke boot exited $status"
                grep -m2 -iE 'panic|errno' "$console" | sed 's/^/  /'
            } > "$record.failed"
            mv "$record.failed" "$record"
        fi
        rm -f "$console"
    fi
    if [ "$(cat "$record")" != ok ]; then
        cat "$record" | sed 's/^/build-kernel: /' >&2
        exit 2
    fi
}

install_packages() {
    local missing
    missing=$(missing_packages)
    [ -z "$missing" ] && return 0
    [ "$(id -u)" = 0 ] || cannot "it needs these Debian packages, and installing them needs root: $missing"
    command -v apt-get >/dev/null || cannot "it needs these Debian packages, and there is no apt-get: $missing"
    say "installing $missing"
    timeout 300 apt-get update -q >/dev/null || fail "apt-get update did not finish"
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends $missing >/dev/null \
        || fail "apt-get install $missing did not finish"
    [ -z "$(missing_packages)" ] || fail "still missing after apt-get install: $(missing_packages)"
}

# Set each option of kernel.config, let Kconfig resolve the rest, then check every one held.
configure() {
    local line name value
    timeout 300 make ARCH=um defconfig >/dev/null || fail "make defconfig failed"
    while read -r line; do
        case "$line" in
            CONFIG_*=*) name=${line%%=*}; value=${line#*=}; ./scripts/config --set-val "${name#CONFIG_}" "$value" ;;
            "# CONFIG_"*" is not set") name=${line#\# }; name=${name%% *}; ./scripts/config --disable "${name#CONFIG_}" ;;
        esac
    done < "$HERE/kernel.config"
    timeout 300 make ARCH=um olddefconfig >/dev/null || fail "make olddefconfig failed"
    while read -r line; do
        case "$line" in
            CONFIG_*=*) grep -qx "$line" .config || fail "after olddefconfig, $line does not hold ($(grep "^${line%%=*}=" .config || echo "${line%%=*} unset"))" ;;
            "# CONFIG_"*" is not set") name=${line#\# }; name=${name%% *}
                ! grep -q "^$name=" .config || fail "after olddefconfig, $name is still set ($(grep "^$name=" .config))" ;;
        esac
    done < "$HERE/kernel.config"
}

build_kernel() {
    local entry started
    entry=$(cache_entry)
    WORK="$CACHE/.work-$(basename "$entry")-$$"
    mkdir -p "$WORK"
    say "building $(basename "$entry") in $WORK (about 4 minutes on 2 cores)"
    started=$(date +%s)
    timeout 600 tar xJf "$TARBALL" -C "$WORK" || fail "could not unpack $TARBALL"
    cd "$WORK/$SOURCE_PACKAGE"
    local patch
    for patch in $PATCHES; do
        patch -p1 --forward --quiet < "$HERE/$patch" || fail "$patch does not apply to this $SOURCE_PACKAGE"
    done
    configure
    if ! timeout 1500 make ARCH=um -j"$(nproc)" linux > "$WORK/build.log" 2>&1; then
        tail -n 40 "$WORK/build.log" >&2
        fail "the kernel did not build (the end of its log is above)"
    fi
    mkdir -p "$WORK/entry"
    cp linux "$WORK/entry/linux"
    cp .config "$WORK/entry/config"
    key_text > "$WORK/entry/key.txt"
    cd "$CACHE"
    rm -rf "$entry"
    mv "$WORK/entry" "$entry"
    say "built in $(( $(date +%s) - started )) s: $(du -h "$entry/linux" | cut -f1) kernel"
}

prepare_python() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating the venv $VENV"
        python3 -m venv "$VENV" || fail "could not create the venv $VENV"
    fi
    local check='import sys, gpiod; sys.exit(tuple(int(p) for p in gpiod.__version__.split(".")[:2]) < (2, 2))'
    if ! "$VENV/bin/python" -c "$check" 2>/dev/null; then
        say "installing $GPIOD_REQUIREMENT into $VENV"
        timeout 600 "$VENV/bin/python" -m pip install -q "$GPIOD_REQUIREMENT" || fail "pip could not install $GPIOD_REQUIREMENT"
        "$VENV/bin/python" -c "$check" || fail "$VENV/bin/python still cannot import $GPIOD_REQUIREMENT"
    fi
    local lgpio=$VENV/rpi-lgpio
    if [ ! -f "$lgpio/.installed" ] || [ "$(cat "$lgpio/.installed")" != "$LGPIO_REQUIREMENTS" ]; then
        say "installing $LGPIO_REQUIREMENTS into $lgpio"
        rm -rf "$lgpio"
        # shellcheck disable=SC2086
        timeout 600 "$VENV/bin/python" -m pip install -q --only-binary=:all: --target "$lgpio" $LGPIO_REQUIREMENTS \
            || fail "pip could not install $LGPIO_REQUIREMENTS"
        echo "$LGPIO_REQUIREMENTS" > "$lgpio/.installed"
    fi
}

case "${1:-}" in
    --print-kernel) print_kernel; exit 0 ;;
    "") ;;
    *) echo "usage: $0 [--print-kernel]" >&2; exit 1 ;;
esac

check_host
# A cached kernel needs none of the build tools; only its key needs the source package.
if ! installed "$SOURCE_PACKAGE" || [ ! -x "$(cache_entry)/linux" ]; then
    install_packages
fi
mkdir -p "$CACHE"
# One build at a time per cache (two checkouts may share it); the second waits, then finds it.
exec 9> "$CACHE/.lock"
flock -w 1800 9 || fail "another build-kernel.sh held $CACHE/.lock for 30 minutes"
entry=$(cache_entry)
if [ -x "$entry/linux" ]; then
    say "cached: $(basename "$entry")"
else
    build_kernel
fi
smoke_boot "$entry"
say "smoke boot on this CPU: a process ran"
prepare_python
echo "$entry/linux"
