#!/usr/bin/env bash
# The traces one lab agent and its tasks may leave on the lab host, and nothing of any other
# agent's: what a test's teardown requires to be gone while other tests run on the same host.
# usage: scan-agent.sh AGENT_ID AGENTS_ROOT STATE_ROOT SHIM_REGEX [ALLOC_ID...]
# SHIM_REGEX matches a shim's program name, starting each alternative with a [x] class so that
# it cannot match this script's own command line (lab/checks/janitor.py SHIMS).
# Ownership: the unit, data dir and driver state root carry the agent's id; a task's cgroup
# and java process carry its allocation's id (Nomad names the scope <alloc>.<task>.scope).
# Prints "<kind> <item>" lines, as the global scan (lab/checks/janitor.py SCAN_SCRIPT) does.
set -u
agent=$1 agents_root=$2 state_root=$3 shims=$4
shift 4
allocs=("$@")

# Under TCG every program started costs ~0.1 s: bash's globs, read and regexes do the rest.
shopt -s nullglob globstar
prefix() { while IFS= read -r line; do printf '%s %s\n' "$1" "$line"; done; }

systemctl list-units "$agent.service" --all --plain --no-legend 2>/dev/null |
  while read -r unit _; do echo "unit $unit"; done
[ -e "$agents_root/$agent" ] && echo "data_dir $agent"
# crun keeps one directory per container in its root: with none there, crun (a second or
# more under TCG, on every teardown) has nothing to list.
containers=("$state_root"/crun/*/)
if [ "${#containers[@]}" -gt 0 ] && command -v crun >/dev/null; then
  crun --root "$state_root/crun" list -q 2>/dev/null | prefix container
fi
for bundle in "$state_root"/**/config.json; do echo "bundle $bundle"; done
# One pass over the processes: this agent's shims, and the java processes of its allocations.
# $shims starts each alternative with a [x] class, so it cannot match this script's own
# command line; the scan's shell is skipped by pid as well.
# session_of PID: sets $session (as lab/checks/janitor.py SESSION_OF, which a test compares).
session_of() {
  local stat
  IFS= read -r stat 2>/dev/null < "/proc/$1/stat" || return 1
  read -r _ _ _ session _ <<< "${stat##*) }"
}
session_of $$; own=$session
for proc in /proc/[0-9]*; do
  pid=${proc#/proc/}
  mapfile -d '' -t argv 2>/dev/null < "$proc/cmdline" || continue  # gone since the glob
  [ "${#argv[@]}" -gt 0 ] || continue  # a kernel thread
  printf -v args '%s ' "${argv[@]}"
  args=${args//$'\n'/ }  # one line per trace
  shim=""
  [[ $args =~ $shims\ $state_root/bundles/ ]] && shim=1
  comm=""
  IFS= read -r comm 2>/dev/null < "$proc/comm"
  [ -n "$shim" ] || { [ "${#allocs[@]}" -gt 0 ] && [ "$comm" = java ]; } || continue
  # This scan's processes and those of the checks beside it in one batch share its session.
  session_of "$pid" || continue
  [ "$session" = "$own" ] && continue
  [ -n "$shim" ] && echo "shim $pid ${args% }"
  if [ "${#allocs[@]}" -eq 0 ] || [ "$comm" != java ]; then continue; fi
  cgroup=""
  IFS= read -r -d '' cgroup 2>/dev/null < "$proc/cgroup"
  [ -n "$cgroup" ] || continue  # gone since
  for a in "${allocs[@]}"; do
    case $cgroup in *"$a"*) echo "java_process $pid $args"; break ;; esac
  done
done
while read -r _ _ _ _ mountpoint _; do
  case $mountpoint in "$agents_root/$agent/"*|"$state_root/"*) echo "mount $mountpoint" ;; esac
done < /proc/self/mountinfo
[ "${#allocs[@]}" -eq 0 ] && exit 0
# A group network (`mode = "bridge"`): Nomad names its namespace after the allocation; the
# veth pair and the CNI rules go with it.
for a in "${allocs[@]}"; do [ -e "/var/run/netns/$a" ] && echo "netns $a"; done
# One walk of the cgroup tree for all the allocations (each walk costs about a second under TCG).
names=()
for a in "${allocs[@]}"; do names+=(${names[0]+-o} -name "$a.*"); done
find /sys/fs/cgroup -mindepth 1 -type d \( "${names[@]}" \) 2>/dev/null | prefix cgroup
true
