#!/bin/bash
# Traffic shaping with tc netem (lab/faults/network.py). The lab's root qdisc has handle 1ab:.
#   netem.sh modules MOD...             exit 3 unless each kernel module loads
#   netem.sh free DEV                   exit 3 if DEV already has the lab's qdisc
#   netem.sh add DEV NETEM...           netem as DEV's root qdisc
#   netem.sh add-port DEV PORT NETEM... netem for TCP from or to PORT only: a prio root whose
#                                       priomap sends all other traffic to band 1, netem on
#                                       band 3, and u32 filters on dport/sport steering to it
#   netem.sh del DEV                    remove the lab's root qdisc from DEV (idempotent)
#   netem.sh check DEV                  exit 0 iff DEV has a netem qdisc; prints it
#   netem.sh gone DEV                   exit 0 iff the lab's qdisc is off DEV
#   netem.sh scan | sweep               the lab's root qdiscs on any device; sweep deletes them
set -u
handle=1ab:        # lab.faults.QDISC_HANDLE
netem_handle=1ac:  # lab.faults.NETEM_HANDLE

ours() {
  tc qdisc show dev "$1" | grep -q "qdisc [a-z_]* $handle root"
}

sub=${1:-}
shift
case $sub in
  modules)
    for m in "$@"; do
      if ! err=$(modprobe "$m" 2>&1); then
        echo "kernel module $m is not available: \`modprobe $m\` said: ${err:-nothing}." \
          "fix: install the running kernel's modules in the lab host (Debian's" \
          "linux-image-amd64 ships them under /lib/modules/$(uname -r)) or use a kernel" \
          "built with it" >&2
        exit 3
      fi
    done
    ;;
  free)
    if ours "$1"; then
      echo "dev $1 already has the lab qdisc: a previous network fault was not healed: run" \
        "\`./invoke lab.clean\`" >&2
      exit 3
    fi
    ;;
  add)
    dev=$1
    shift
    tc qdisc add dev "$dev" root handle "$handle" netem "$@"
    ;;
  add-port)
    dev=$1 port=$2 band=${handle}3
    shift 2
    # all unmatched traffic goes to band 1: never delayed
    tc qdisc add dev "$dev" root handle "$handle" prio bands 3 priomap 0 0 0 0 0 0 0 0 0 0 0 0 \
      0 0 0 0 || exit
    tc qdisc add dev "$dev" parent "$band" handle "$netem_handle" netem "$@" || exit
    for dir in dport sport; do
      tc filter add dev "$dev" parent "$handle" protocol ip prio 1 u32 \
        match ip "$dir" "$port" 0xffff flowid "$band" || exit
    done
    ;;
  del)
    if ours "$1"; then tc qdisc del dev "$1" root; fi
    ;;
  check)
    tc qdisc show dev "$1" | grep netem || { echo "no netem qdisc on $1" >&2; exit 1; }
    ;;
  gone)
    if ours "$1"; then echo "the lab qdisc is still on $1" >&2; exit 1; fi
    ;;
  scan)
    if command -v tc >/dev/null; then tc qdisc show 2>/dev/null | grep " $handle "; fi
    true
    ;;
  sweep)
    if command -v tc >/dev/null; then
      tc qdisc show 2>/dev/null | awk -v h="$handle" '$3 == h && $4 == "dev" && $6 == "root" \
        {print $5}' | sort -u | while read -r dev; do
        tc qdisc del dev "$dev" root && echo "healed: tc qdisc on $dev"
      done
    fi
    true
    ;;
  *)
    echo "usage: ${0##*/} modules|free|add|add-port|del|check|gone|scan|sweep ..." >&2
    exit 2
    ;;
esac
