"""The record of one test: what its agent was, what happened to it and when, what it left.

One Record per test, filled while the test runs (by the pytest plugin) and kept whatever
fails: each part is gathered best effort, and a part that cannot be gathered records its own
error in `errors` instead of raising (a record must never mask the test's own failure).

    agent              id, unit, ports, node, data dir, log, start-up timeline, time waited
    phases             (name, seconds): agent ready, each job's milestones, drained, stopped,
                       scanned
    faults             this test's entries of lab.faults.JOURNAL: injected, healed, with times
    artifact_requests  what the artifact server served during the test (tests that use it)
    task_events        every task event of the agent's allocations (time, alloc, task, type,
                       message), fetched through the agent's API before it stops
    leftovers          the scan after the test: what was found, and the same in words
    kernel             kernel problems logged during the test (lab/checks/kernel_log.py)
    lost               why the lab host was lost during the test (lab/checks/guest_watch.py);
                       its serial console's last lines go to serial.txt
    reports            setup / call / teardown: outcome, duration, the failure's text

`write()` puts record.json and a readable record.txt (one timeline merging faults, artifact
requests and task events) into the test's diagnostics bundle.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.checks import leftovers as leftover_words

FAILURE_TEXT_CHARS = 4000  # the tail of a phase's failure text kept in the record


@dataclass
class Record:
    test: str
    lab: bool = False  # the test used the lab host
    started_at: float = field(default_factory=time.time)
    agent: dict[str, Any] | None = None
    phases: list[tuple[str, float]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    artifact_requests: list[dict[str, Any]] | None = None  # None: the test did not use them
    task_events: list[dict[str, Any]] | None = None  # None: no agent API to ask
    leftovers: dict[str, Any] | None = None  # None: not scanned
    kernel: list[str] | None = None  # kernel problems in the test's span; None: not read
    kernel_traces: str | None = None  # their lines and call traces, when they failed the test
    lost: str | None = None  # the lab host was lost (panicked, silent) during the test: why
    serial: str | None = None  # then: the serial console's last lines
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # part -> why it is missing
    bundle: str | None = None  # the diagnostics bundle's directory, once one is written

    def part(self, name: str, producer: Callable[[], Any], default: Any = None) -> Any:
        """producer() or, if it raises, `default` with the error kept under `name`."""
        try:
            return producer()
        except Exception as exc:  # noqa: BLE001 - one missing part must not cost the record
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            return default

    def add_report(self, when: str, outcome: str, duration: float, text: str = "") -> None:
        self.reports[when] = {"outcome": outcome, "duration": round(duration, 3),
                              "error": text[-FAILURE_TEXT_CHARS:] if text else ""}

    def set_leftovers(self, found: dict[str, list[str]], agent_id: str | None = None) -> None:
        self.leftovers = {"found": found,
                          "described": self.part("leftovers", lambda: leftover_words.describe(
                              found, agent_id), default=[])}

    @property
    def failed(self) -> bool:
        return any(r["outcome"] == "failed" for r in self.reports.values())

    @property
    def outcome(self) -> str:
        """pytest's words: failed (the body), error (setup or teardown), skipped, passed."""
        return outcome_of(self.reports)

    @property
    def duration(self) -> float:
        return round(sum(r["duration"] for r in self.reports.values()), 3)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (it travels from xdist workers to the controller, and into record.json)."""
        data = asdict(self)
        data.update(outcome=self.outcome, duration=self.duration)
        return json.loads(json.dumps(data, default=str))


def outcome_of(reports: dict[str, dict[str, Any]]) -> str:
    outcomes = {when: r["outcome"] for when, r in reports.items()}
    if outcomes.get("call") == "failed":
        return "failed"
    if "failed" in outcomes.values():
        return "error"
    if "skipped" in outcomes.values():
        return "skipped"
    return "passed" if outcomes else "not run"


# -- the parts -------------------------------------------------------------------------------
def agent_info(agent: Any, waited: float | None = None) -> dict[str, Any]:
    """What identifies a NomadAgent and how it started (also for one that failed to)."""
    info = {"id": agent.id, "unit": agent.unit, "ports": dict(agent.ports),
            "node_id": agent.node_id, "data_dir": agent.dir, "log": agent.log_path,
            "timeline": dict(agent.timeline)}
    if getattr(agent, "ready_at", 0):
        info["startup_s"] = round(agent.startup_seconds, 3)
    if waited is not None:
        info["waited_s"] = round(waited, 3)
    return info


def fault_entries(records: Iterable[Any], since: float) -> list[dict[str, Any]]:
    """The journal's faults opened at or after `since` (lab.faults.FaultRecord)."""
    keys = ("name", "host", "details", "started_at", "injected_at", "heal_started_at",
            "healed_at", "error")
    return [{**{k: getattr(r, k, None) for k in keys}, "active": r.healed_at is None}
            for r in records if r.started_at >= since]


def request_entries(requests: Iterable[Any], since: float) -> list[dict[str, Any]]:
    """The artifact server's requests begun at or after `since` (RequestRecord)."""
    keys = ("name", "method", "range", "status", "mode", "bytes_sent", "outcome",
            "started_at", "finished_at")
    return [{k: getattr(r, k, None) for k in keys} for r in requests if r.started_at >= since]


def allocations(api: Any) -> list[dict]:
    """Every allocation of the agent, in full (with TaskStates and their events)."""
    return [api.allocation(a["ID"]) for a in api.allocations()]


def task_events(allocs: Iterable[dict]) -> list[dict[str, Any]]:
    """Every task event of `allocs`, oldest first: time (epoch seconds), alloc, job, task,
    type, message."""
    events = []
    for alloc in allocs:
        for task, state in sorted((alloc.get("TaskStates") or {}).items()):
            for event in state.get("Events") or []:
                events.append({
                    "time": event["Time"] / 1e9 if event.get("Time") else None,
                    "alloc": alloc["ID"][:8], "job": alloc.get("JobID"), "task": task,
                    "type": event.get("Type", "?"),
                    "message": (event.get("DisplayMessage") or event.get("Message")
                                or event.get("DriverError") or "")})
    return sorted(events, key=lambda e: (e["time"] is None, e["time"] or 0))


# -- the readable form -----------------------------------------------------------------------
def _clock(t: float | None) -> str:
    if not t:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def timeline(record: dict[str, Any]) -> list[tuple[float | None, str, str]]:
    """(time, source, text) of faults, artifact requests and task events, oldest first."""
    rows: list[tuple[float | None, str, str]] = []
    for f in record.get("faults") or []:
        details = json.dumps(f.get("details") or {}, sort_keys=True)
        rows.append((f.get("injected_at") or f.get("started_at"), "fault",
                     f"{f['name']} injected on {f.get('host')} {details}"
                     + (f" (error: {f['error']})" if f.get("error") else "")))
        rows.append((f.get("healed_at"), "fault", f"{f['name']} healed" if f.get("healed_at")
                     else f"{f['name']} NOT HEALED"))
    for r in record.get("artifact_requests") or []:
        took = (f" in {r['finished_at'] - r['started_at']:.2f}s" if r.get("finished_at")
                else "")
        rng = f" range={r['range']}" if r.get("range") else ""
        mode = f" mode={r['mode']}" if r.get("mode") else ""
        rows.append((r.get("started_at"), "artifact",
                     f"{r['method']} {r['name']}{rng} -> {r.get('status') or '-'} "
                     f"{r.get('outcome')}{mode} sent={r.get('bytes_sent')}{took}"))
    for e in record.get("task_events") or []:
        message = f": {e['message']}" if e.get("message") else ""
        rows.append((e.get("time"), "event",
                     f"alloc {e['alloc']} task {e['task']}: {e['type']}{message}"))
    return sorted(rows, key=lambda row: (row[0] is None, row[0] or 0))


def render_text(record: dict[str, Any]) -> str:
    """record.txt: the record as a person reads it."""
    reports = record.get("reports") or {}
    lines = [f"test      {record['test']}",
             f"outcome   {record.get('outcome')} in {record.get('duration', 0):.1f}s ("
             + ", ".join(f"{w} {r['outcome']} {r['duration']:.1f}s" for w, r in reports.items())
             + ")",
             f"began     {time.strftime('%Y-%m-%d', time.localtime(record['started_at']))} "
             f"{_clock(record['started_at'])}"]
    agent = record.get("agent")
    if agent:
        ports = " ".join(f"{k}={v}" for k, v in (agent.get("ports") or {}).items())
        steps = " ".join(f"{k}={v:.2f}s" for k, v in (agent.get("timeline") or {}).items())
        lines += [f"agent     {agent['id']} (unit {agent['unit']}, node {agent.get('node_id')})",
                  f"          ports {ports or '-'}; data dir {agent.get('data_dir')}; "
                  f"log {agent.get('log')}",
                  f"          start-up {steps or '-'}"
                  + (f"; ready in {agent['startup_s']:.2f}s" if "startup_s" in agent else "")
                  + (f"; the test waited {agent['waited_s']:.2f}s" if "waited_s" in agent
                     else "")]
    else:
        lines.append("agent     none")
    phases = record.get("phases") or []
    lines.append("phases    " + (" | ".join(f"{n} {s:.1f}s" for n, s in phases) or "-"))
    if record.get("artifact_requests") is None:
        lines.append("artifacts not used")
    rows = timeline(record)
    lines += ["", "timeline (wall clock of the control host; Nomad's events carry the lab "
              "host's clock)"]
    began = record["started_at"]
    lines += [f"  {f'+{t - began:.3f}s' if t else '':>10} {_clock(t):>12}  {src:<8} {text}"
              for t, src, text in rows] or ["  (nothing happened: no fault, request or event)"]
    lines += ["", "leftovers"]
    left = record.get("leftovers")
    if left is None:
        lines.append("  not scanned")
    else:
        lines += [f"  - {line}" for line in left.get("described") or []] or ["  none"]
    kernel = record.get("kernel")
    lines += ["", "kernel problems in this test's span (call traces: kernel.txt)"]
    lines += (["  not read"] if kernel is None
              else [f"  - {line}" for line in kernel] or ["  none"])
    if record.get("lost"):
        lines += ["", "the lab host was lost during this test (its serial console: serial.txt)",
                  f"  {record['lost']}"]
    if record.get("errors"):
        lines += ["", "parts of this record that could not be gathered"]
        lines += [f"  {name}: {why}" for name, why in record["errors"].items()]
    for when, rep in reports.items():
        if rep.get("error"):
            lines += ["", f"failure in {when}", *("  " + ln for ln in rep["error"].splitlines())]
    return "\n".join(lines) + "\n"


def write(record: dict[str, Any], out: Path) -> list[Path]:
    """record.json and record.txt into the bundle directory `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "record.json", out / "record.txt"]
    paths[0].write_text(json.dumps(record, indent=2, sort_keys=True))
    paths[1].write_text(render_text(record))
    return paths
