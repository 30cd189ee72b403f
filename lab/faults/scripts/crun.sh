#!/bin/bash
# crun moved aside or wrapped (lab/faults/crun.py).
#   crun.sh present PATH           exit 3 unless PATH is an executable
#   crun.sh gone PATH              exit 0 iff PATH is gone; prints any other crun on PATH
#   crun.sh wrap PATH REAL WRAPPER hard-link PATH to REAL, then rename the wrapper (text)
#                                  over PATH in one step: PATH is never missing
#   crun.sh unstage PATH           remove a wrapper staged next to PATH (PATH.lab-wrapper)
#   crun.sh unstaged PATH          exit 0 iff no wrapper is staged next to PATH
#   crun.sh probe PATH LOG SUB     exit 0 iff the wrapper at PATH fails SUB and passes
#                                  --version on; prints the JSON line it logged to LOG
#   crun.sh scan | sweep ROOT...   staged wrappers under the roots; sweep removes them
set -u
staged=.lab-wrapper

staged_under() {
  find "$@" -xdev -name "*$staged" 2>/dev/null
}

sub=${1:-}
shift
case $sub in
  present)
    [ -x "$1" ] || { echo "$1 is not an executable: install crun or pass path=" >&2; exit 3; }
    ;;
  gone)
    [ ! -e "$1" ] || { echo "$1 still exists" >&2; exit 1; }
    command -v crun || true
    ;;
  wrap)
    path=$1 real=$2 wrapper=$3
    ln -fT "$path" "$real" || exit
    printf '%s' "$wrapper" > "$path$staged" || exit
    chmod 0755 "$path$staged" || exit
    mv -fT "$path$staged" "$path"
    ;;
  unstage)
    rm -f "$1$staged"
    ;;
  unstaged)
    [ ! -e "$1$staged" ] || { echo "$1$staged is still there" >&2; exit 1; }
    ;;
  probe)
    path=$1 log=$2 sub=$3
    rm -f "$log"
    if "$path" --root /run/lab-fault-probe --log "$log" --log-format=json "$sub" lab-probe \
        2>/dev/null; then
      echo "the wrapper did not fail $sub" >&2
      exit 1
    fi
    "$path" --version >/dev/null || { echo "$path --version fails: the real crun is not" \
      "reached" >&2; exit 1; }
    cat "$log"
    rm -f "$log"
    ;;
  scan)
    staged_under "$@"
    true
    ;;
  sweep)
    staged_under "$@" | while read -r w; do rm -f "$w" && echo "healed: removed $w"; done
    true
    ;;
  *)
    echo "usage: ${0##*/} present|gone|wrap|unstage|unstaged|probe|scan|sweep ..." >&2
    exit 2
    ;;
esac
