#!/bin/bash
# Files a fault moved aside: each renamed to <file>.lab-hidden, and put back by the heal.
#   moved-aside.sh hide PATH...      rename each PATH to PATH.lab-hidden
#   moved-aside.sh restore PATH...   put PATH.lab-hidden back (idempotent): a lab wrapper at
#                                    PATH is replaced; a real file there (reinstalled since)
#                                    wins and the hidden copy is dropped
#   moved-aside.sh restored PATH...  exit 0 iff each PATH is back (stderr names what is not)
#   moved-aside.sh refuse PATH...    exit 3 if a previous fault on PATH was never healed
#   moved-aside.sh refuse-under DIR NAME   exit 3 if a NAME under DIR is still hidden
#   moved-aside.sh scan ROOT...      every hidden file under the roots, one a line
#   moved-aside.sh sweep ROOT...     restore every hidden file under the roots
set -u
hidden=.lab-hidden               # lab.faults.HIDDEN
wrapper_mark=LAB_FAULT_WRAPPER   # lab.faults.WRAPPER_MARK: in every wrapper a fault installs

present() { [ -e "$1" ] || [ -L "$1" ]; }

restore() {
  local p=$1 h=$1$hidden
  present "$h" || return 0
  if present "$p" && ! grep -qs "$wrapper_mark" "$p"; then
    rm -f "$h" && echo "healed: dropped stale $h"
  else
    mv -fT "$h" "$p" && echo "healed: restored $p"
  fi
}

hidden_under() {
  find "$@" -xdev -name "*$hidden" 2>/dev/null
}

sub=${1:-}
shift
case $sub in
  hide)
    for p in "$@"; do mv -T "$p" "$p$hidden" || exit; done
    ;;
  restore)
    for p in "$@"; do restore "$p" >/dev/null || exit; done
    ;;
  restored)
    for p in "$@"; do
      present "$p" || { echo "$p is missing" >&2; exit 1; }
      ! present "$p$hidden" || { echo "$p$hidden is still there" >&2; exit 1; }
      ! grep -qs "$wrapper_mark" "$p" || { echo "$p is still a lab wrapper" >&2; exit 1; }
    done
    ;;
  refuse)
    for p in "$@"; do
      if present "$p$hidden" || grep -qs "$wrapper_mark" "$p"; then
        echo "$p: a previous fault was not healed ($p$hidden or a wrapper is there): run" \
          "\`./invoke lab.clean\` (lab.faults.sweep)" >&2
        exit 3
      fi
    done
    ;;
  refuse-under)
    if find "$1" -name "$2$hidden" | grep -q .; then
      echo "$2$hidden is under $1: a previous fault was not healed: run \`./invoke lab.clean\`" \
        "(lab.faults.sweep)" >&2
      exit 3
    fi
    ;;
  scan)
    hidden_under "$@"
    true
    ;;
  sweep)
    hidden_under "$@" | while read -r h; do restore "${h%"$hidden"}"; done
    true
    ;;
  *)
    echo "usage: ${0##*/} hide|restore|restored|refuse|scan|sweep PATH..." >&2
    exit 2
    ;;
esac
