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

systemctl list-units "$agent.service" --all --plain --no-legend 2>/dev/null |
  awk '{print "unit", $1}'
[ -e "$agents_root/$agent" ] && echo "data_dir $agent"
# crun keeps one directory per container in its root: with none there, crun (a second or
# more under TCG, on every teardown) has nothing to list.
shopt -s nullglob
containers=("$state_root"/crun/*/)
if [ "${#containers[@]}" -gt 0 ] && command -v crun >/dev/null; then
  crun --root "$state_root/crun" list -q 2>/dev/null | sed 's/^/container /'
fi
find "$state_root" -name config.json 2>/dev/null | sed 's/^/bundle /'
pgrep -a -f "$shims $state_root/bundles/" | sed 's/^/shim /'
awk -v a="$agents_root/$agent/" -v s="$state_root/" \
  'index($5, a) == 1 || index($5, s) == 1 {print "mount", $5}' /proc/self/mountinfo
[ "${#allocs[@]}" -eq 0 ] && exit 0
for pid in $(pgrep -x java); do
  { cg=$(<"/proc/$pid/cgroup"); } 2>/dev/null || continue  # the process may be gone
  for a in "${allocs[@]}"; do
    case $cg in *"$a"*) echo "java_process $pid $(tr '\0' ' ' <"/proc/$pid/cmdline")"; break ;; esac
  done
done
# A group network (`mode = "bridge"`): Nomad names its namespace after the allocation; the
# veth pair and the CNI rules go with it.
for a in "${allocs[@]}"; do [ -e "/var/run/netns/$a" ] && echo "netns $a"; done
# One walk of the cgroup tree for all the allocations (each walk costs about a second under TCG).
names=()
for a in "${allocs[@]}"; do names+=(${names[0]+-o} -name "$a.*"); done
find /sys/fs/cgroup -mindepth 1 -type d \( "${names[@]}" \) 2>/dev/null | sed 's/^/cgroup /'
true
