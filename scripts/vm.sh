#!/bin/sh
# Runs a command inside a VM on another kernel: by default Debian 12's own
# (linux-image-amd64, 6.1 LTS, with kprobes, fentry and BTF), under qemu.
#
#   sh scripts/vm.sh [--] COMMAND...      e.g. sh scripts/vm.sh ./bin/kernscope doctor
#
# The guest sees this machine's root filesystem read-only over 9p, with a
# tmpfs overlay on top, so it runs the same checkout, node and packages; it
# starts in the checkout's directory. What the command prints comes back
# through the serial console, and its exit status is this script's.
#
# Set-up, done once and cached in .cache/vm: qemu-system-x86 and
# busybox-static from Debian's archive, and the kernel package downloaded
# and unpacked there (never installed on this machine, whose boot is left
# alone). A tiny initramfs loads the 9p, virtio and overlay modules and
# hands over to the host's shell.
#
# Environment:
#   KS_VM_KERNEL  kernel package (default: what linux-image-amd64 depends on)
#   KS_VM_ACCEL   tcg (default: a KVM guest hangs early in boot here) or kvm
#   KS_VM_MEM     MiB of memory (default 2048)
#   KS_VM_TIMEOUT seconds before the VM is stopped (default 900)
#   KS_VM_DISK    a disk image to attach as /dev/vda (optional)
#   KS_VM_BOOTS   boots the command may take (default 1). With 2 or more, a
#                 panic reboots the guest (panic=1) instead of ending the run,
#                 and the command runs again with KS_VM_BOOT set to the boot's
#                 number; the kernel's log at the panic survives the reboot in
#                 ramoops (memory qemu keeps across a reset), read at
#                 /sys/fs/pstore. The status is the last boot's.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE=$ROOT/.cache/vm
log() { printf 'vm: %s\n' "$*" >&2; }

[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { log "usage: scripts/vm.sh [--] COMMAND..."; exit 2; }
[ "$(id -u)" = 0 ] || { log "needs root (qemu's 9p passthrough, apt)"; exit 2; }

# 1. Packages: qemu, a static busybox for the initramfs, cpio to pack it.
missing=""
for p in qemu-system-x86 busybox-static cpio kmod; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  log "installing$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 2. The kernel: downloaded and unpacked, not installed.
PKG=${KS_VM_KERNEL:-$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')}
[ -n "$PKG" ] || { log "cannot tell which kernel linux-image-amd64 is"; exit 1; }
KDIR=$CACHE/$PKG
if [ ! -f "$KDIR/.unpacked" ]; then
  log "downloading $PKG"
  mkdir -p "$KDIR"
  (cd "$CACHE" && rm -f "$PKG"_*.deb && apt-get download "$PKG" 2>/dev/null)
  dpkg-deb -x "$CACHE/$PKG"_*.deb "$KDIR"
  rm -f "$CACHE/$PKG"_*.deb
  touch "$KDIR/.unpacked"
fi
VMLINUZ=$(ls "$KDIR"/boot/vmlinuz-* | head -n 1)
KVER=${VMLINUZ##*/vmlinuz-}
MODS=$KDIR/lib/modules/$KVER

# 3. The initramfs: busybox, the modules the guest needs before it can see
#    the host's root (in dependency order), and an init.
INITRD=$CACHE/initrd-$KVER.img
if [ ! -f "$INITRD" ] || [ scripts/vm.sh -nt "$INITRD" ]; then
  log "building the initramfs for $KVER"
  tmp=$(mktemp -d)
  mkdir -p "$tmp/bin" "$tmp/modules" "$tmp/proc" "$tmp/sys" "$tmp/dev" "$tmp/lower" "$tmp/rw" "$tmp/newroot"
  cp /bin/busybox "$tmp/bin/busybox"
  order=""
  ko() { find "$MODS/kernel" -name "$1.ko" | head -n 1; }
  add() { # a module after what it depends on (sh has no locals: $1 is the only state kept)
    case " $order " in *" $1 "*) return ;; esac
    [ -n "$(ko "$1")" ] || { log "no module $1 in $PKG"; exit 1; }
    for d in $(modinfo -F depends "$(ko "$1")" | tr ',' ' '); do add "$d"; done
    cp "$(ko "$1")" "$tmp/modules/"
    order="$order $1"
  }
  # ext4 asks for crc32c at mount time, which the guest cannot modprobe.
  for m in virtio_pci 9pnet_virtio 9p overlay virtio_blk crc32c_generic ext4 ramoops; do add "$m"; done
  echo "$order" > "$tmp/modules/order"
  cat > "$tmp/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc || echo "vm: no /proc" > /dev/console
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do
  # ramoops takes its memory from the command line (ramoops.mem_address...).
  # insmod, unlike modprobe, does not read it there.
  if [ "$m" = ramoops ]; then
    args=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^ramoops\.//p' | tr '\n' ' ')
    [ -n "$args" ] && insmod /modules/$m.ko $args 2>/dev/null
  else insmod /modules/$m.ko; fi
done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /lower
mount -t tmpfs -o size=75% rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot
mkdir -p /newroot/mnt/ks-vm
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 ksvm /newroot/mnt/ks-vm
umount /proc /sys
umount /dev 2>/dev/null
exec switch_root /newroot /bin/sh /mnt/ks-vm/guest.sh
EOF
  chmod +x "$tmp/init"
  (cd "$tmp" && find . | cpio -o -H newc --quiet | gzip -1) > "$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"
  rm -rf "$tmp"
fi

# 4. The run: a shared folder carries the command in and the status out.
SHARE=$(mktemp -d /tmp/ks-vm-XXXXXX)
trap 'rm -rf "$SHARE"' EXIT
{
  printf 'KS_VM_BOOTS=%s\n' "${KS_VM_BOOTS:-1}"
  printf 'cd %s\n' "$(printf '%s' "$ROOT" | sed "s/'/'\\\\''/g; s/^/'/; s/\$/'/")"
  printf 'set --'
  for a in "$@"; do printf " '%s'" "$(printf '%s' "$a" | sed "s/'/'\\\\''/g")"; done
  printf '\n'
} > "$SHARE/cmd"
printf '%s\n' "$ROOT" > "$SHARE/root"
cat > "$SHARE/guest.sh" <<'EOF'
# PID 1 in the guest, the host's sh on the overlay: mounts what the agent
# needs, runs the command, records its status, powers off.
mount -t proc proc /proc || echo "vm: no /proc" > /dev/console
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs shm /dev/shm
# A checkout under /tmp stays visible under the guest's own /tmp.
KS_ROOT=$(cat /mnt/ks-vm/root)
case "$KS_ROOT" in /tmp/*) mkdir -p /mnt/ks-root && mount --bind "$KS_ROOT" /mnt/ks-root ;; esac
mount -t tmpfs tmp /tmp
case "$KS_ROOT" in /tmp/*) mkdir -p "$KS_ROOT" && mount --bind /mnt/ks-root "$KS_ROOT" ;; esac
mount -t tmpfs run /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null || { mkdir -p /sys/fs/cgroup/unified; mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified; }
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t pstore pstore /sys/fs/pstore 2>/dev/null
ip link set lo up 2>/dev/null || busybox ip link set lo up
hostname ks-vm
export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 KS_VM=1
echo "vm: $(uname -r) up in $(cut -d' ' -f1 /proc/uptime) s" > /dev/console
. /mnt/ks-vm/cmd
KS_VM_BOOT=$(( $(cat /mnt/ks-vm/boots 2>/dev/null || echo 0) + 1 ))
echo $KS_VM_BOOT > /mnt/ks-vm/boots
export KS_VM_BOOT
if [ "$KS_VM_BOOT" -gt "$KS_VM_BOOTS" ]; then
  echo "vm: boot $KS_VM_BOOT of at most $KS_VM_BOOTS: stopping" > /dev/console
  # The last boot's status stands; 125 only when none came.
  [ -f /mnt/ks-vm/status ] || echo 125 > /mnt/ks-vm/status
  echo o > /proc/sysrq-trigger
  while :; do :; done
fi
"$@" < /dev/null > /dev/console 2>&1
echo $? > /mnt/ks-vm/status
sync
echo o > /proc/sysrq-trigger
# Builtins only while the power goes: a program exec'd now may find the
# shared root gone, and an init that exits panics (and, with panic=1, boots).
while :; do :; done
EOF

ACCEL=${KS_VM_ACCEL:-tcg}
DISK=""
[ -n "${KS_VM_DISK:-}" ] && DISK="-drive file=$KS_VM_DISK,format=raw,if=virtio"
# 1 MiB at the top of the guest's memory, kept from the kernel, for ramoops.
MEM=${KS_VM_MEM:-2048}
OOPS=$(printf '0x%x' $(( (MEM - 16) * 1048576 )))
APPEND="console=ttyS0 quiet loglevel=3 rdinit=/init memmap=1M\$$OOPS ramoops.mem_address=$OOPS ramoops.mem_size=0x100000 ramoops.record_size=0x20000 ramoops.ecc=0"
REBOOT=-no-reboot
if [ "${KS_VM_BOOTS:-1}" -gt 1 ]; then
  APPEND="$APPEND panic=1"
  REBOOT=""
else
  APPEND="$APPEND panic=-1"
fi
log "booting $KVER ($ACCEL)"
rc=0
timeout "${KS_VM_TIMEOUT:-900}" qemu-system-x86_64 -accel "$ACCEL" -cpu max -smp 2 -m "$MEM" \
  -nographic $REBOOT -monitor none -serial stdio \
  -kernel "$VMLINUZ" -initrd "$INITRD" \
  -append "$APPEND" \
  -fsdev local,id=hostroot,path=/,security_model=passthrough,readonly=on,multidevs=remap \
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
  -fsdev local,id=ksvm,path="$SHARE",security_model=passthrough \
  -device virtio-9p-pci,fsdev=ksvm,mount_tag=ksvm \
  $DISK </dev/null || rc=$?
if [ ! -f "$SHARE/status" ]; then
  log "the guest ended without a status (qemu exit $rc)"
  exit 125
fi
exit "$(cat "$SHARE/status")"
