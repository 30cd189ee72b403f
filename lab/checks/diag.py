"""Failure bundle: everything needed to understand a failed test, pulled back from the lab host.

Written to reports/diag/<test>/ before the agent is torn down: agent log (with the plugin's
lines), allocations with task events, each task's stdout/stderr, `crun list` and states, task
cgroups, dmesg tail, leftovers; with the test's record (lab.checks.record) beside them.
`summary()` is the short text attached to the pytest report; `keep_instructions()` says how to
reach an agent that --lab-keep kept.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lab.checks import record
from lab.checks.janitor import CRUN_ROOTS
from lab.nomad.agent import NomadAgent
from lab.nomad.jobrun import summarize_alloc
from lab.remote.host import LabHost
from lab.remote.layout import PLUGIN_BINARY

PARTS = ("agent.log", "plugin.log", "allocations.json", "crun.txt", "cgroups.txt",
         "dmesg.txt", "leftovers.json")


def bundle_dir(reports_dir: Path, test_id: str) -> Path:
    return reports_dir / "diag" / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_id).strip("_")[:150]


def collect(host: LabHost, agent: NomadAgent | None, out: Path) -> list[str]:
    """Write the bundle; each part is best effort and records its own failure."""
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def part(name: str, producer) -> None:
        try:
            content = producer()
        except Exception as exc:  # noqa: BLE001 - a broken part must not hide the others
            content = f"could not collect {name}: {type(exc).__name__}: {exc}\n"
        (out / name).write_text(content if isinstance(content, str) else
                                json.dumps(content, indent=2, default=str))
        written.append(name)

    if agent is not None:
        # Fetched inside part(): a dead agent or a dropped SSH session must still leave the
        # host-side parts below (crun, cgroups, dmesg) in the bundle.
        log = ""

        def agent_log() -> str:
            nonlocal log
            log = host.read_file(agent.log_path, missing_ok=True)
            return log

        part("agent.log", agent_log)
        part("plugin.log", lambda: "\n".join(
            line for line in log.splitlines() if PLUGIN_BINARY in line or "java-crun" in line))
        if agent.api is not None:
            allocs: list[dict] = []

            def allocations() -> list[dict]:
                allocs.extend(record.allocations(agent.api))
                return allocs

            part("allocations.json", allocations)
            for alloc in allocs:
                for task in (alloc.get("TaskStates") or {}):
                    for stream in ("stdout", "stderr"):
                        name = f"task-{alloc['ID'][:8]}-{task}.{stream}"
                        part(name, lambda a=alloc, t=task, s=stream:
                             agent.api.logs(a["ID"], t, s))
    part("crun.txt", lambda: host.sudo(
        f"for r in {CRUN_ROOTS}; do [ -d $r ] || continue; echo \"== crun --root $r\"; "
        f"crun --root $r list; for c in $(crun --root $r list -q); do crun --root $r state $c;"
        f" done; done", check=False).stdout)
    part("cgroups.txt", lambda: host.sudo(
        "for d in $(find /sys/fs/cgroup/nomad.slice -name '*.scope' 2>/dev/null); do "
        "echo \"== $d\"; for f in cgroup.procs memory.max memory.current memory.events "
        "pids.max cpu.weight; do printf '%s: ' $f; tr '\\n' ' ' < $d/$f; echo; done; done",
        check=False).stdout)
    part("dmesg.txt", lambda: host.sudo("dmesg | tail -n 80", check=False).stdout)
    from lab.checks import janitor

    part("leftovers.json", lambda: janitor.scan(host))
    return written


def summary(out: Path, max_lines: int = 25) -> str:
    """A few lines for the test report: allocations, events, the plugin's last words."""
    lines = [f"diagnostics bundle: {out}"]
    try:
        for alloc in json.loads((out / "allocations.json").read_text()):
            lines.append("  " + summarize_alloc(alloc))
    except (OSError, ValueError):
        pass
    plugin = (out / "plugin.log").read_text().splitlines() if (out / "plugin.log").exists() else []
    errors = [line for line in plugin if "[ERROR]" in line or "[WARN]" in line][-5:]
    lines += ["  plugin: " + line[-300:] for line in errors]
    return "\n".join(lines[:max_lines])


def keep_instructions(agent: NomadAgent, host) -> str:
    """How to reach a kept agent: its API through an SSH tunnel, its unit, the clean-up."""
    spec = host.spec
    key = f" -i {spec.key_file}" if spec.key_file else ""
    port = agent.ports["http"]
    return "\n".join([
        f"lab: --lab-keep: the failed test's agent {agent.id} is left running; the session "
        "stops here.",
        f"  reach its API:  ssh -N -L {port}:127.0.0.1:{port} -p {spec.port}{key} "
        f"{spec.user}@{spec.host} &",
        f"                  export NOMAD_ADDR=http://127.0.0.1:{port}; nomad status",
        f"  on the lab host (./invoke lab.ssh): unit {agent.unit}, log {agent.log_path}, "
        f"data {agent.dir}",
        "  clean up:       ./invoke lab.clean"])
