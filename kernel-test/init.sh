#!/bin/sh
# PID 1 of the initramfs (busybox sh). It loads the modules that reach the root, mounts this
# machine's / read-only over virtio-9p with a tmpfs overlay on top (every guest write lands in
# the guest's RAM, nothing on the host disk), mounts the job folder read-write, and hands over
# to the job's guest.sh as PID 1 of the real root. Any failure powers off without writing
# the job's rc file: the host then reports the boot as failed (125).
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t devtmpfs dev /dev
fail() {
    echo "kernel-test init: $*" >&2
    busybox poweroff -f
}
busybox --install -s /bin
for m in $(cat /modules/order); do
    insmod "/modules/$m.ko" || fail "insmod $m failed"
done
# cache=loose: the share is read-only and nothing else writes what the guest reads; it saves
# a 9p round trip per stat and open, which Python's imports do by the thousand.
mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=loose,msize=512000 hostroot /lower \
    || fail "cannot mount the host root (9p tag hostroot)"
mount -t tmpfs -o mode=0755 overlay-rw /rw || fail "tmpfs for the overlay"
mkdir /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \
    || fail "overlay over the host root"
mkdir -p /newroot/kernel-test-job
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 job /newroot/kernel-test-job \
    || fail "cannot mount the job folder (9p tag job)"
[ -f /newroot/kernel-test-job/guest.sh ] || fail "no guest.sh in the job folder"
umount /proc
umount /dev
exec switch_root /newroot /bin/sh /kernel-test-job/guest.sh
