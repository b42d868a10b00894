# Shell functions shared by the lab guest's initramfs /init and its root file system's /sbin/init.
# busybox sh; installed as /lib/lab/common.sh. Everything a caller prints goes to the console
# (ttyS0), where the lab reads the @@ markers.

LAB_ADDR=10.0.2.15/24   # QEMU user networking: the guest's address and gateway
LAB_GW=10.0.2.2

# cmdline_arg NAME DEFAULT: the value of NAME=value on the kernel command line.
cmdline_arg() {
  for w in $(cat /proc/cmdline); do
    case "$w" in "$1="*) echo "${w#*=}"; return 0 ;; esac
  done
  echo "$2"
}

# wait_until SECONDS COMMAND...: poll every 0.1 s until COMMAND succeeds.
wait_until() {
  _n=$(( $1 * 10 )); shift
  while ! "$@" >/dev/null 2>&1; do
    _n=$(( _n - 1 ))
    [ "$_n" -le 0 ] && return 1
    sleep 0.1
  done
  return 0
}

# The array controller: the SCSI generic device whose peripheral device type is 0x0C (12).
find_controller() {
  for _t in /sys/class/scsi_generic/sg*/device/type; do
    [ -r "$_t" ] || continue
    if [ "$(cat "$_t")" = 12 ]; then
      _d=${_t%/device/type}
      echo "/dev/${_d##*/}"
      return 0
    fi
  done
  return 1
}

# The logical drive: the first sd block device (peripheral type 0), or msa500.root=.
find_disk() {
  _r=$(cmdline_arg msa500.root "")
  if [ -n "$_r" ]; then
    [ -b "$_r" ] && { echo "$_r"; return 0; }
    return 1
  fi
  for _t in /sys/block/sd*/device/type; do
    [ -r "$_t" ] || continue
    if [ "$(cat "$_t")" = 0 ]; then
      _d=${_t%/device/type}
      [ -b "/dev/${_d##*/}" ] || continue
      echo "/dev/${_d##*/}"
      return 0
    fi
  done
  return 1
}

# disk_sectors /dev/sdX: its capacity in 512-byte sectors (0 while the port is standby/fenced).
disk_sectors() {
  cat "/sys/block/${1##*/}/size" 2>/dev/null || echo 0
}

# rescan_disk /dev/sdX: make the kernel read the capacity again (after a failover or restore).
rescan_disk() {
  echo 1 >"/sys/block/${1##*/}/device/rescan" 2>/dev/null
}

net_up() {
  ip link set lo up 2>/dev/null
  wait_until 10 test -e /sys/class/net/eth0 || return 1
  ip link set eth0 up || return 1
  ip addr add "$LAB_ADDR" dev eth0 2>/dev/null
  ip route add default via "$LAB_GW" 2>/dev/null
  return 0
}

uptime_s() {
  cut -d' ' -f1 /proc/uptime
}
