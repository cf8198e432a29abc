#!/bin/sh
# Dev-time check (not used by the product): boot the guest kernel under qemu TCG with a
# busybox initramfs, run one scheduler with the given arguments next to a few spinners,
# and print what it reported plus /sys/kernel/sched_ext/state.
#
#   Schedulers/dev/check-in-qemu.sh <kernel bzImage> <scheduler binary> [args...]
#
# Needs busybox-static (/bin/busybox), cpio, qemu-system-x86_64.
set -eu
KERNEL=$1; SCHED=$2; shift 2
ARGS="$*"
SECS=${QCHECK_SECS:-20}
WORK=$(mktemp -d /tmp/ktstr-qcheck.XXXXXX)
trap 'rm -rf "$WORK"' EXIT INT TERM
R=$WORK/root
mkdir -p $R/bin $R/proc $R/sys $R/dev $R/tmp $R/sched
cp /bin/busybox $R/bin/busybox
cp "$SCHED" $R/sched/sched
# The scheduler's shared libraries and its loader, at the paths the loader expects.
for lib in $(ldd "$SCHED" | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^\s*\(\/[^ ]*\) (.*/\1/p'); do
    mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"
done
cat > $R/init <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
for i in 1 2 3 4; do (while :; do :; done) & done
( while :; do sleep 0.01; done ) &
/sched/sched $ARGS > /tmp/sched.log 2>&1 &
SP=\$!
n=0
while [ \$n -lt $((SECS * 5)) ]; do
    kill -0 \$SP 2>/dev/null || break
    [ \$n -eq 10 ] && echo "QCHECK state after 1s: \$(cat /sys/kernel/sched_ext/state)"
    sleep 0.2; n=\$((n+1))
done
kill -0 \$SP 2>/dev/null && { echo "QCHECK still running after ${SECS}s: SIGTERM"; kill -TERM \$SP; sleep 2; }
echo "QCHECK scheduler output:"; sed 's/^/QCHECK| /' /tmp/sched.log
echo "QCHECK final state: \$(cat /sys/kernel/sched_ext/state)"
dmesg | grep -i sched_ext | sed 's/^/QCHECK kmsg| /'
poweroff -f
INIT
chmod 755 $R/init
(cd $R && find . | cpio -o -H newc --quiet) > $WORK/initrd
timeout 180 qemu-system-x86_64 -M pc -accel tcg -m 512 -smp 2 -nographic -no-reboot \
    -kernel "$KERNEL" -initrd $WORK/initrd \
    -append "console=ttyS0 reboot=k panic=-1 rdinit=/init quiet" </dev/null | grep -a QCHECK
