#!/usr/bin/env bash
# Stop one lab Nomad agent and remove its files, in one round trip; print what remains.
# usage: agent-stop.sh UNIT DIR STATE_ROOT graceful|kill
# kill: after a clean drain nothing of value runs in the unit (allocations garbage-collected,
# containers destroyed), so the agent is SIGKILLed at once instead of waiting for Nomad's own
# shutdown (seconds under TCG). graceful: a failed drain may have left tasks: let Nomad stop.
# KillMode=process leaves logmon and shims in the unit's cgroup: they are KILLed either way.
# Prints "unit:<unit>", "dir:<dir>", "process:<dir>", "state_root:<dir>" for each thing left.
set -u
unit=$1 dir=$2 state_root=$3 how=$4

if [ "$how" = graceful ]; then
  systemctl stop "$unit" 2>/dev/null
fi
systemctl kill -s KILL "$unit" 2>/dev/null
systemctl stop "$unit" 2>/dev/null
systemctl reset-failed "$unit" 2>/dev/null
# Nomad mounts secrets/ (tmpfs) and may leave alloc mounts: unmount, deepest first, before rm.
if [ -d "$dir" ]; then
  grep -o " $dir/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
  rm -rf "$dir"
fi
# The driver's state root goes only when crun holds no container there: a container left
# behind must stay visible to the leftover scan (and to the sweep that removes it).
# (crun keeps a directory per container in its root: with none, there is no crun to spawn.)
if [ -d "$state_root" ] && { [ -z "$(ls -A "$state_root/crun" 2>/dev/null)" ] ||
    [ -z "$(crun --root "$state_root/crun" list -q 2>/dev/null)" ]; }; then
  rm -rf "$state_root"
fi

systemctl is-active --quiet "$unit" && echo "unit:$unit"
[ -e "$dir" ] && echo "dir:$dir"
[ -e "$state_root" ] && echo "state_root:$state_root"
# [-]: the pattern must not match this script's own command line.
pgrep -f -- "[-]config=$dir/" >/dev/null && echo "process:$dir"
true
