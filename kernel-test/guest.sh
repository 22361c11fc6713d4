#!/bin/sh
# PID 1 of the test machine (copied into each job folder as guest.sh). The root is this
# machine's / under a tmpfs overlay; the job folder /kernel-test-job carries in `env` and
# `command` and carries out `rc`. Lines starting with "kernel-test:" are read by the host.
# PID 1 must never exit (the kernel would panic): every path ends in poweroff.
JOB=/kernel-test-job
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
# The extracted package's modules, for anything that loads one later (uname -r names them).
mkdir -p /lib/modules
ln -sfn "$(cat $JOB/modules)" "/lib/modules/$(uname -r)"
hostname kernel-test
/bin/busybox ip link set lo up 2>/dev/null
echo "kernel-test: uname -r $(uname -r)"
set -a
. $JOB/env
set +a
cd "$(cat $JOB/cwd)" && /bin/sh $JOB/command
rc=$?
echo "kernel-test: rc $rc"
echo $rc > $JOB/rc.tmp && mv $JOB/rc.tmp $JOB/rc
sync
/bin/busybox poweroff -f
