#!/bin/sh
# PID 1 of build-kernel.sh's smoke boot: the smallest proof that the kernel runs a userspace
# process on this host (an unpatched UML 6.1 panics here on a CPU with AMX). It prints a
# marker build-kernel.sh looks for, does a little floating-point work in a second process (the
# FP registers are saved and restored around it), and powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
echo "rpisensor-uml smoke: userspace runs"
if [ "$(awk 'BEGIN { s = 0; for (i = 1; i <= 20000; i++) s += 1 / i; printf "%.6f", s }')" = 10.480728 ]; then
    echo "rpisensor-uml smoke: floating point ok"
fi
sync
echo o > /proc/sysrq-trigger
sleep 60
