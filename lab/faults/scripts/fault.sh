#!/bin/bash
# The steps every fault shares (lab/faults/framework.py), run as root on the lab host.
#   fault.sh apply HEAL_FILE HEAL INJECT CHECK
#       save HEAL (shell) as HEAL_FILE, *then* run INJECT; stop there if INJECT fails. Then
#       print the marker line and run CHECK (exit 0 iff the fault is in effect; its stdout is
#       what was observed); exit 86 if CHECK fails. The heal is on the host before the damage.
#   fault.sh heal HEAL_FILE HEAL HEALED
#       run HEAL (idempotent), remove HEAL_FILE, then HEALED (exit 0 iff the original state
#       is back; stderr says what is not).
#   fault.sh scan STATE_DIR      the heal files still pending, one a line
#   fault.sh sweep STATE_DIR     run each pending heal file; "healed: ran F" or "FAILED: F"
set -u
check_mark=__lab_fault_check__
not_in_effect=86

case ${1:-} in
  apply)
    heal_file=$2 heal=$3 inject=$4 check=$5
    mkdir -p "${heal_file%/*}" || exit
    { printf '# lab.faults heal (%s); run by lab.faults.sweep if the test died\n' \
        "${heal_file##*/}"
      printf '%s\n' "$heal"; } > "$heal_file" || exit
    bash -ec "$inject" || exit
    echo "$check_mark"
    bash -ec "$check" || exit "$not_in_effect"
    ;;
  heal)
    heal_file=$2 heal=$3 healed=$4
    bash -ec "$heal" || exit
    rm -f "$heal_file" || exit
    bash -ec "$healed"
    ;;
  scan)
    for f in "$2"/*.sh; do
      [ -e "$f" ] && echo "$f"
    done
    true
    ;;
  sweep)
    for f in "$2"/*.sh; do
      [ -e "$f" ] || continue
      if bash "$f" >/dev/null; then rm -f "$f"; echo "healed: ran $f"; else echo "FAILED: $f" >&2; fi
    done
    true
    ;;
  *)
    echo "usage: ${0##*/} apply|heal|scan|sweep ..." >&2
    exit 2
    ;;
esac
