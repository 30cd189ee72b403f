"""Find and remove what lab runs leave on the lab host.

`scan` lists every trace a test could leave (agent units, data dirs, crun containers, bundles,
shims, java processes, task cgroups, mounts); the pytest plugin asserts it is empty after
every test. `sweep` removes all of it: `invoke lab.clean` and the start of every run call it,
so a crashed or Ctrl-C'd run heals itself (Jepsen's "teardown before setup").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from lab.faults.registry import PREFIX
from lab.remote.host import LabHost
from lab.remote.layout import AGENTS_ROOT, CRUN_STATE_ROOT, PLUGIN_BINARY, SHIM_BINARY, UNIT_PREFIX

# Each agent's driver keeps crun's state in <state_root>/crun and each container's bundle in
# <state_root>/bundles/<id>, its state root being <CRUN_STATE_ROOT>/<agent id> (agent.state_root);
# a shim runs as `<shim binary> <bundle dir>` (plugin/driver/launch.go, plugin/shim/run.go),
# the shim binary being java-crun-shim, or the plugin's own where no shim is installed.
CRUN_ROOTS = f"{CRUN_STATE_ROOT}/*/crun"
# Nomad names a group network's namespace (/var/run/netns) after its allocation: only those are
# the lab's, whatever else an ssh:// lab host keeps there.
ALLOC_NETNS = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

# One round trip: each probe prints "<kind> <item>" lines. Under TCG every program started
# costs ~0.1 s, so the probes use bash's own globs, `read` and regexes, and start only
# systemctl, find (the cgroup tree) and, where a container directory exists, crun.
# pgrep/pkill -f patterns (the sweep's) start with a [x] class so they cannot match the
# command line of the shell running the script (which contains the pattern's text): that
# would report (or kill) ourselves. The scan's own process probe skips its shell by pid too.
SHIMS = f"([{PLUGIN_BINARY[0]}]{PLUGIN_BINARY[1:]}|[{SHIM_BINARY[0]}]{SHIM_BINARY[1:]})"
# The scan's processes: a shim is `<shim or plugin binary> <state root>/bundles/<id>`.
SHIM_ARGS = f"{SHIMS} {CRUN_STATE_ROOT}/[^ ]*/bundles/"
# session_of PID: sets $session to the process's session id (field 6 of /proc/PID/stat, after
# the command name, which may hold spaces and parentheses); fails when the process is gone.
SESSION_OF = r"""session_of() {
  local stat
  IFS= read -r stat 2>/dev/null < "/proc/$1/stat" || return 1
  read -r _ _ _ session _ <<< "${stat##*) }"
}"""
SCAN_SCRIPT = rf"""
shopt -s nullglob globstar
{PREFIX}
systemctl list-units '{UNIT_PREFIX}*' --all --plain --no-legend 2>/dev/null |
  while read -r unit _; do echo "unit $unit"; done
for dir in {AGENTS_ROOT}/*; do echo "data_dir ${{dir##*/}}"; done
for root in {CRUN_ROOTS}; do
  # crun keeps a directory per container in its root: with none, it has nothing to list.
  containers=("$root"/*/)
  if [ "${{#containers[@]}}" -gt 0 ] && command -v crun >/dev/null; then
    crun --root "$root" list -q 2>/dev/null | prefix container
  fi
done
for bundle in {CRUN_STATE_ROOT}/**/config.json; do echo "bundle $bundle"; done
shim_args='{SHIM_ARGS}'
{SESSION_OF}
session_of $$; own=$session
for proc in /proc/[0-9]*; do
  pid=${{proc#/proc/}}
  mapfile -d '' -t argv 2>/dev/null < "$proc/cmdline" || continue  # gone since the glob
  [ "${{#argv[@]}}" -gt 0 ] || continue  # a kernel thread
  printf -v args '%s ' "${{argv[@]}}"
  args=${{args//$'\n'/ }}  # one line per trace, as pgrep -a and tr printed them
  shim=""
  [[ $args =~ $shim_args ]] && shim=1
  comm=""
  IFS= read -r comm 2>/dev/null < "$proc/comm"
  [ -n "$shim" ] || [ "$comm" = java ] || continue
  # This scan's own processes, and those of the checks run beside it in one batch (the
  # guest set-up's or the facts' `java -version`), are in its session: not traces.
  session_of "$pid" || continue
  [ "$session" = "$own" ] && continue
  [ -n "$shim" ] && echo "shim $pid ${{args% }}"
  [ "$comm" = java ] || continue
  # A java inside a lab agent's unit (the plugin's `java -version` probe while an agent
  # started ahead fingerprints) names the unit, so that the agent's exclusion covers it.
  cgroup=""
  IFS= read -r -d '' cgroup 2>/dev/null < "$proc/cgroup"
  [ -n "$cgroup" ] || continue  # gone since
  unit=""
  [[ $cgroup =~ ({UNIT_PREFIX}[^/]*[.]service) ]] && unit=${{BASH_REMATCH[1]}}
  echo "java_process $pid $args${{unit:+(in $unit)}}"
done
find /sys/fs/cgroup -mindepth 1 -type d \( -name '*.scope' -path '*nomad*' \
  -o -path '*/java-crun*' \) 2>/dev/null | prefix cgroup
while read -r _ _ _ _ mountpoint _; do
  case $mountpoint in {AGENTS_ROOT}/*|{CRUN_STATE_ROOT}/*) echo "mount $mountpoint" ;; esac
done < /proc/self/mountinfo
for ns in /var/run/netns/*; do
  [[ ${{ns##*/}} =~ {ALLOC_NETNS} ]] && echo "netns ${{ns##*/}}"
done
true
"""

SWEEP_SCRIPT = rf"""
for u in $(systemctl list-units '{UNIT_PREFIX}*' --all --plain --no-legend | awk '{{print $1}}'); do
  # KillMode=process leaves logmon and shims in the unit's cgroup: KILL them all.
  systemctl stop "$u"; systemctl kill --signal=KILL "$u"; systemctl reset-failed "$u"
done 2>/dev/null
if command -v crun >/dev/null; then
  for root in {CRUN_ROOTS}; do
    [ -d "$root" ] || continue
    for c in $(crun --root "$root" list -q 2>/dev/null); do
      crun --root "$root" kill "$c" KILL 2>/dev/null
      crun --root "$root" delete --force "$c"
    done
  done
fi
pkill -KILL -f '{SHIMS}' 2>/dev/null
pkill -KILL -x java 2>/dev/null
awk '$5 ~ "^{AGENTS_ROOT}/|^{CRUN_STATE_ROOT}/" {{print $5}}' /proc/self/mountinfo | sort -r \
  | xargs -r -n1 umount -l
rm -rf {AGENTS_ROOT}/* {CRUN_STATE_ROOT}
for ns in $(ls /var/run/netns 2>/dev/null | grep -E '{ALLOC_NETNS}'); do ip netns delete "$ns"; done
# Task cgroups: deepest first, rmdir only (a populated cgroup refuses, which scan reports).
find /sys/fs/cgroup -mindepth 1 -depth -type d \
  \( -path '*nomad.slice/*' -o -path '*/java-crun*' \) -exec rmdir {{}} \; 2>/dev/null
true
"""


def with_faults(script: str, include_faults: bool = True) -> str:
    """`script` and, with include_faults, the faults' scan beside it in the same round trip
    (its lines prefixed "fault "; each line one write, whole)."""
    if not include_faults:
        return script
    from lab import faults

    return f"{PREFIX}\n{{\n{faults.scan_script()}\n}} | prefix fault &\n{script}\nwait\n"


def scan_script(include_faults: bool = True) -> str:
    """One round trip: the lab's traces and, with include_faults, the faults', at once."""
    return with_faults(SCAN_SCRIPT, include_faults)


def parse_scan(stdout: str, exclude_agents: Iterable[str] = ()) -> dict[str, list[str]]:
    """{kind: [item, ...]} from the scan's "<kind> <item>" lines, without the traces that
    name an agent in exclude_agents."""
    excluded = tuple(exclude_agents)
    found: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        kind, _, item = line.strip().partition(" ")
        if kind and item and not any(names_agent(item, agent_id) for agent_id in excluded):
            found.setdefault(kind, []).append(item)
    return found


def scan(host: LabHost, include_faults: bool = True,
         exclude_agents: Iterable[str] = ()) -> dict[str, list[str]]:
    """Every lab trace on the host by kind; with include_faults, unhealed faults too.

    Traces that name an agent in `exclude_agents` (its unit, data dir, state root, mounts)
    are left out: a live agent started ahead for the next test is not this test's leftover.
    """
    return parse_scan(host.sudo(scan_script(include_faults), check=False).stdout,
                      exclude_agents)


def names_agent(item: str, agent_id: str) -> bool:
    """item names this agent: nomad-lab-r-1 is named by nomad-lab-r-1.service, not -10."""
    return re.search(re.escape(agent_id) + r"(?![0-9])", item) is not None


def scan_agent(host: LabHost, agent_id: str, alloc_ids: Iterable[str],
               include_faults: bool = True) -> dict[str, list[str]]:
    """The traces of one agent and its allocations only (scan-agent.sh): what its test must
    leave behind clean while other tests' agents run on the same host."""
    from lab.remote.host import script_command
    from lab.remote.layout import state_root

    script = script_command("scan-agent.sh", [agent_id, AGENTS_ROOT, state_root(agent_id),
                                              SHIMS, *sorted(alloc_ids)])
    return parse_scan(host.sudo(with_faults(script, include_faults), check=False).stdout)


def describe(found: dict[str, list[str]]) -> str:
    return json.dumps(found, indent=2, sort_keys=True)


def sweep(host: LabHost) -> dict[str, list[str]]:
    """Remove every lab trace, heal every fault; return what was there before."""
    from lab import faults  # faults depends on host only; imported late to keep layers clear

    before = scan(host)
    faults.sweep(host)  # first: a hidden crun or java would make the rest of the sweep fail
    host.sudo(SWEEP_SCRIPT, check=False, timeout=120)
    return before
