#!/usr/bin/env bash
# Stop one lab Nomad agent and remove its files, in one round trip; print what remains.
# usage: agent-stop.sh UNIT DIR STATE_ROOT graceful|kill
# kill: after a clean drain nothing of value runs in the unit (allocations garbage-collected,
# containers destroyed), so the agent is SIGKILLed at once instead of waiting for Nomad's own
# shutdown (seconds under TCG). graceful: a failed drain may have left tasks: let Nomad stop.
# KillMode=process leaves logmon and shims in the unit's cgroup: they are KILLed either way.
# Prints "unit:<unit>", "dir:<dir>", "process:<dir>", "state_root:<dir>" for each thing left.
# Under TCG every program started costs ~0.1 s: bash reads /proc, the mounts and the cgroup
# itself; programs run only where there is something to do (4 in all for a clean agent).
set -u
shopt -s nullglob dotglob
unit=$1 dir=$2 state_root=$3 how=$4
cgroups=${CGROUP_ROOT:-/sys/fs/cgroup}  # another root only in the script's unit tests

if [ "$how" = graceful ]; then
  systemctl stop "$unit" 2>/dev/null
fi
systemctl kill -s KILL "$unit" 2>/dev/null
# Returns once systemd saw the unit stop; --collect (given at its launch) unloads it, failed
# or not: no reset-failed.
systemctl stop "$unit" 2>/dev/null

# Nomad mounts secrets/ (tmpfs) and may leave alloc mounts: unmount before rm, the deepest
# first (mountinfo lists a mount after the one it sits on: read backwards).
mounts=()
while read -r _ _ _ _ point _; do
  [[ $point == "$dir"/* ]] && mounts=("$point" "${mounts[@]}")
done < /proc/self/mountinfo
((${#mounts[@]})) && umount -l "${mounts[@]}"

remove=()
[ -d "$dir" ] && remove+=("$dir")
# The driver's state root goes only when crun holds no container there: a container left
# behind must stay visible to the leftover scan (and to the sweep that removes it).
# (crun keeps a directory per container in its root: with none, there is no crun to spawn.)
if [ -d "$state_root" ]; then
  containers=("$state_root"/crun/*)
  if ((${#containers[@]} == 0)) || [ -z "$(crun --root "$state_root/crun" list -q 2>/dev/null)" ]; then
    remove+=("$state_root")
  fi
fi
((${#remove[@]})) && rm -rf "${remove[@]}"

# Still running: a process in the unit's cgroup (cgroup v2, or v1's systemd hierarchy).
for cgroup in "$cgroups/system.slice/$unit" "$cgroups/systemd/system.slice/$unit"; do
  if [ -r "$cgroup/cgroup.procs" ] && read -r _ < "$cgroup/cgroup.procs"; then
    echo "unit:$unit"
    break
  fi
done
[ -e "$dir" ] && echo "dir:$dir"
[ -e "$state_root" ] && echo "state_root:$state_root"
# [-]: the pattern must not match this script's own command line.
pgrep -f -- "[-]config=$dir/" >/dev/null && echo "process:$dir"
true
