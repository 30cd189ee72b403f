"""Leftovers in words: what a scan (lab.checks.janitor) found, one sentence per trace, with
the path or command that shows it on the lab host.

    container 5e6f7a8b-....app.1f2e3d4c still exists in /run/java-crun/nomad-lab-ab12-3/crun
        (alloc 5e6f7a8b, task app; see: crun --root ... list)
    cgroup /sys/fs/cgroup/nomad.slice/share.slice/5e6f7a8b-....app.scope of alloc 5e6f7a8b,
        task app remains
"""

from __future__ import annotations

import re

from lab.remote.layout import AGENTS_ROOT, CRUN_STATE_ROOT, state_root

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# The driver's container id is Nomad's task id with "/" as ".": <alloc>.<task>.<suffix>.
_CONTAINER = re.compile(rf"^(?P<alloc>{_UUID})\.(?P<task>.+?)(?:\.[0-9a-f]{{8}})?$")
# Nomad's task scope: <alloc>.<task>.scope (cgroup v2).
_SCOPE = re.compile(rf"(?P<alloc>{_UUID})\.(?P<task>[^/]+)\.scope$")
_BUNDLE = re.compile(rf"^(?P<root>{re.escape(CRUN_STATE_ROOT)}/[^/]+)/bundles/(?P<id>[^/]+)/")


def _owner(alloc: str | None, task: str | None) -> str:
    if not alloc:
        return ""
    return f"alloc {alloc[:8]}" + (f", task {task}" if task else "")


def _crun_root(container: str, found: dict[str, list[str]], agent_id: str | None) -> str | None:
    """Where crun keeps the container: the bundle beside it names its state root."""
    for bundle in found.get("bundle", []):
        m = _BUNDLE.match(bundle)
        if m and m["id"] == container:
            return f"{m['root']}/crun"
    return f"{state_root(agent_id)}/crun" if agent_id else None


def _pid_and_command(item: str) -> tuple[str, str]:
    pid, _, command = item.partition(" ")
    return pid, command.strip()


def sentence(kind: str, item: str, found: dict[str, list[str]],
             agent_id: str | None = None) -> str:
    """One trace in words."""
    if kind == "unit":
        return f"agent unit {item} is still loaded (systemctl status {item})"
    if kind == "data_dir":
        return f"agent data dir {AGENTS_ROOT}/{item} remains"
    if kind == "container":
        m = _CONTAINER.match(item)
        owner = _owner(m["alloc"], m["task"]) if m else ""
        root = _crun_root(item, found, agent_id)
        where = (f" in {root} (crun --root {root} state {item})" if root
                 else f" in one of {CRUN_STATE_ROOT}/*/crun")
        return f"container {item}{f' of {owner}' if owner else ''} still exists{where}"
    if kind == "bundle":
        m = _BUNDLE.match(item)
        name = m["id"] if m else item
        return f"bundle of container {name} remains: {item}"
    if kind == "shim":
        pid, command = _pid_and_command(item)
        return f"shim process {pid} still runs: {command}"
    if kind == "java_process":
        pid, command = _pid_and_command(item)
        return f"java process {pid} still runs: {command}"
    if kind == "cgroup":
        m = _SCOPE.search(item)
        if m:
            return f"cgroup {item} of {_owner(m['alloc'], m['task'])} remains"
        container = _CONTAINER.match(item.rstrip("/").rsplit("/", 1)[-1])
        owner = f" of {_owner(container['alloc'], container['task'])}" if container else ""
        return f"cgroup {item}{owner} remains"
    if kind == "mount":
        return f"{item} is still mounted (findmnt {item})"
    if kind == "netns":
        return (f"network namespace {item} (a group network of allocation {item[:8]}) remains:"
                f" ip netns pids {item}; ip netns delete {item}")
    if kind == "fault":
        return f"a fault is not healed: {item}"
    return f"{kind}: {item}"


def describe(found: dict[str, list[str]], agent_id: str | None = None) -> list[str]:
    """Every trace in `found` in words, in the scan's order of kinds."""
    return [sentence(kind, item, found, agent_id)
            for kind, items in found.items() for item in items]


def describe_text(found: dict[str, list[str]], agent_id: str | None = None) -> str:
    return "\n".join(f"  - {line}" for line in describe(found, agent_id))
