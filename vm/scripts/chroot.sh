#!/bin/bash
# chroot.sh ROOT [--bind HOSTPATH:GUESTPATH]... [--net] [--] CMD [ARGS...]
#
# Runs CMD inside the guest tree ROOT with /proc, /sys, /dev, /dev/pts and
# tmpfs /tmp and /run mounted, and a clean environment (env -i). Everything
# happens in a private mount namespace: the mounts are unmounted on exit and
# vanish with the namespace even if this script is killed, so a failed build
# never leaves mounts behind on the host.
#   --bind H:G  bind-mount host path H at G inside ROOT for the command
#   --net       bind the host's /etc/resolv.conf so apt can resolve the mirror
set -euo pipefail
if [ "${CFSVM_CHROOT_NS:-}" != inside ]; then
  CFSVM_CHROOT_NS=inside exec unshare --mount --propagation private -- /bin/bash "$0" "$@"
fi
unset CFSVM_CHROOT_NS

root=$(realpath "$1"); shift
binds=(); net=0
while [ $# -gt 0 ]; do
  case $1 in
    --bind) binds+=("$2"); shift 2 ;;
    --net) net=1; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "chroot.sh: no command" >&2; exit 2; }
[ -x "$root/usr/bin/env" ] || { echo "chroot.sh: $root is not a guest tree" >&2; exit 2; }

mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
mnt() { # mnt TARGET mount-args...
  local t=$1; shift
  mount "$@" "$t"
  mounted+=("$t")
}

mnt "$root/proc" -t proc proc
mnt "$root/sys" -t sysfs -o ro sysfs
mnt "$root/dev" --bind /dev
mkdir -p "$root/dev/pts"
mnt "$root/dev/pts" -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts
mnt "$root/tmp" -t tmpfs -o mode=1777 tmpfs
mnt "$root/run" -t tmpfs -o mode=0755 tmpfs
for b in "${binds[@]}"; do
  h=${b%%:*}; g=${b#*:}
  if [ -d "$h" ]; then mkdir -p "$root$g"; else mkdir -p "$(dirname "$root$g")"; [ -e "$root$g" ] || : > "$root$g"; fi
  mnt "$root$g" --bind "$h"
done
if [ $net = 1 ]; then
  # /etc/resolv.conf may be a dangling symlink in the guest: bind over a file in /run instead
  : > "$root/run/resolv.conf"; mnt "$root/run/resolv.conf" --bind /etc/resolv.conf
  if [ ! -e "$root/etc/resolv.conf" ] && [ ! -L "$root/etc/resolv.conf" ]; then
    : > "$root/etc/resolv.conf"; created_resolv=1
  fi
  mnt "$root/etc/resolv.conf" --bind /etc/resolv.conf
fi

rc=0
chroot "$root" /usr/bin/env -i \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root LC_ALL=C.UTF-8 LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
  "$@" || rc=$?
cleanup; mounted=()
[ "${created_resolv:-0}" = 1 ] && rm -f "$root/etc/resolv.conf"
exit $rc
