#!/bin/bash
# The java-crun plugin process (lab/faults/plugin.py).
#   plugin.sh pids BINARY   pids of processes whose command line is BINARY alone (any
#                           directory) and whose environment lacks _JAVA_CRUN_SHIM=1: the
#                           plugin, not its per-container shims (same binary, with a bundle
#                           argument and that variable)
#   plugin.sh kill PID...   SIGKILL those processes
set -u

case ${1:-} in
  pids)
    binary=$2
    for d in /proc/[0-9]*; do
      mapfile -d '' -t argv < "$d/cmdline" 2>/dev/null || continue
      if [ "${#argv[@]}" -ne 1 ] || [ "${argv[0]##*/}" != "$binary" ]; then continue; fi
      tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qx '_JAVA_CRUN_SHIM=1' && continue
      echo "${d#/proc/}"
    done
    true
    ;;
  kill)
    shift
    kill -KILL "$@"
    ;;
  *)
    echo "usage: ${0##*/} pids BINARY | kill PID..." >&2
    exit 2
    ;;
esac
