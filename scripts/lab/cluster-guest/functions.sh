# Shell functions of the cluster guest (/lib/lab/functions.sh), for /init and for job scripts.

uptime_s() { cut -d' ' -f1 /proc/uptime; }
mark() { echo "@@$* t=$(uptime_s)"; }   # a console marker the host side waits for
cmdline_arg() {  # cmdline_arg NAME DEFAULT: the value of NAME=... on the kernel command line
  for w in $(cat /proc/cmdline); do
    case "$w" in "$1="*) echo "${w#*=}"; return ;; esac
  done
  echo "$2"
}
port_addr() { echo "10.0.2.10$1"; }   # the guest's address of array port N (QEMU guestfwd)

# host_wait WORD [SECONDS]: wait until the host sent the line WORD (Guest.send on the host side).
host_wait() {
  _n=$(( ${2:-120} * 5 ))
  while [ "$_n" -gt 0 ]; do
    if [ -e "/run/host/$1" ]; then rm -f "/run/host/$1"; return 0; fi
    sleep 0.2
    _n=$((_n - 1))
  done
  echo "@@HOST_WAIT timeout $1"
  return 1
}
# host_said WORD: did the host send WORD (since the last host_wait/host_said of it)? Never waits.
host_said() { [ -e "/run/host/$1" ] && rm -f "/run/host/$1"; }

# sd_devs: "sdX LUN PORT" for every SCSI disk of an iSCSI session (PORT = the session's TPGT).
sd_devs() {
  for b in /sys/block/sd*; do
    [ -e "$b" ] || continue
    p=$(readlink -f "$b/device")
    hctl=${p##*/}
    lun=${hctl##*:}
    s=$(echo "$p" | sed -n 's|.*/\(session[0-9]*\)/.*|\1|p')
    tpgt=$(cat "/sys/class/iscsi_session/$s/tpgt" 2>/dev/null || echo "?")
    echo "${b##*/} $lun $tpgt"
  done
}
# lun_dev LUN [PORT]: /dev/sdX of that logical unit (through that port); empty if none.
lun_dev() {
  sd_devs | while read -r d l t; do
    if [ "$l" = "$1" ] && { [ -z "${2:-}" ] || [ "$t" = "$2" ]; }; then echo "/dev/$d"; break; fi
  done
}
# mpath_dev: /dev/mapper/NAME of the first multipath map; empty if none.
mpath_dev() {
  for d in /sys/block/dm-*; do
    [ -e "$d/dm/uuid" ] || continue
    case "$(cat "$d/dm/uuid")" in mpath-*) echo "/dev/mapper/$(cat "$d/dm/name")"; return ;; esac
  done
}
# wait_until SECONDS CMD...: run CMD every 0.5 s until it succeeds.
wait_until() {
  _n=$(( $1 * 2 )); shift
  while [ "$_n" -gt 0 ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
    _n=$((_n - 1))
  done
  return 1
}
