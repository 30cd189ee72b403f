"""JobRun: a submitted job and everything a test asks about it, over the HTTP API.

Every wait polls the API under one deadline and, on timeout, names the job, the state it
last saw (allocation status, task state, last events) and where the diagnostics will be.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from lab.core.errors import LabError, LabTimeout
from lab.core.wait import Pending, until
from lab.nomad import events
from lab.nomad.api import TRANSIENT, ApiError, LabApi

TERMINAL_ALLOC = ("complete", "failed", "lost")


def summarize_alloc(alloc: dict | None) -> str:
    """One line: alloc status and each task's state with its last three events."""
    if not alloc:
        return "no allocation yet"
    parts = [f"alloc {alloc['ID'][:8]} client_status={alloc.get('ClientStatus')}"]
    for task, state in sorted((alloc.get("TaskStates") or {}).items()):
        said = [events.line(e) for e in (state.get("Events") or [])[-3:]]
        parts.append(f"task {task}: {state.get('State')} failed={state.get('Failed')} "
                     f"restarts={state.get('Restarts')} events={said}")
    return "; ".join(parts)


class JobRun:
    def __init__(self, api: LabApi, job: dict, timeout: Callable[[str], float],
                 diag_hint: str = ""):
        self.api, self.job = api, job
        self.id: str = job["Job"]["ID"]
        self.timeout = timeout
        self.diag_hint = diag_hint
        self.register_result: dict | None = None
        self.submitted_at: float | None = None
        # (what, seconds after submit) for each wait that succeeded: the test's phases.
        self.milestones: list[tuple[str, float]] = []

    def __repr__(self) -> str:
        return f"JobRun({self.id})"

    @property
    def tasks(self) -> list[str]:
        return [t["Name"] for g in self.job["Job"]["TaskGroups"] for t in g["Tasks"]]

    def submit(self) -> JobRun:
        self.submitted_at = time.monotonic()
        self.register_result = self.api.register(self.job)
        return self

    def _milestone(self, what: str) -> None:
        if self.submitted_at is not None:
            self.milestones.append((what, time.monotonic() - self.submitted_at))

    # -- reading state -------------------------------------------------------------------
    def allocs(self) -> list[dict]:
        return sorted(self.api.job_allocations(self.id), key=lambda a: a.get("CreateIndex", 0))

    def alloc(self) -> dict | None:
        """The newest allocation, in full (with task events)."""
        allocs = self.allocs()
        return self.api.allocation(allocs[-1]["ID"]) if allocs else None

    def task_state(self, task: str | None = None) -> dict:
        alloc = self.alloc() or {}
        return (alloc.get("TaskStates") or {}).get(task or self.tasks[0]) or {}

    def events(self, task: str | None = None) -> list[dict]:
        return self.task_state(task).get("Events") or []

    def event_types(self, task: str | None = None) -> list[str]:
        return [e["Type"] for e in self.events(task)]

    def logs(self, task: str | None = None, stream: str = "stdout") -> str:
        alloc = self.alloc()
        if not alloc:
            return ""
        try:
            return self.api.logs(alloc["ID"], task or self.tasks[0], stream)
        except ApiError as exc:
            if exc.status == 404 and "not started" in exc.text:
                return ""  # a task that never started printed nothing
            raise

    def story(self, task: str | None = None, tail: int = 15) -> str:
        """The task's events and the last lines of its stdout and stderr, for an assertion's
        message: why a JVM died (a crash report, an exception) is in its output, not in the
        events."""
        # In an assertion's message: an API error here must not hide the assertion.
        try:
            parts = [events.describe(self.events(task))]
        except LabError as exc:
            return f"(the task's events could not be read: {exc})"
        for stream in ("stdout", "stderr"):
            try:
                lines = self.logs(task, stream).splitlines()[-tail:]
            except LabError as exc:
                parts.append(f"-- {stream} could not be read: {exc}")
                continue
            parts.append(f"-- last {len(lines)} lines of {stream}:\n" + "\n".join(lines))
        return "\n".join(parts)

    def exit_codes(self, task: str | None = None) -> list[int]:
        return [int(e.get("ExitCode", 0)) for e in self.events(task) if e["Type"] == "Terminated"]

    # -- waiting -------------------------------------------------------------------------
    def _wait(self, check: Callable[[dict | None], object], what: str,
              timeout: float | None) -> object:
        timeout = timeout if timeout is not None else self.timeout("job")
        last = {"alloc": None}

        def poll():
            alloc = self.alloc()
            last["alloc"] = alloc
            result = check(alloc)
            return result if result else Pending(summarize_alloc(alloc))

        try:
            # A poll is two API calls over the tunnel (tens of ms): a short cap on the backoff
            # keeps a job's end from being seen up to 2 s late.
            return until(poll, timeout, f"job {self.id}: {what}", retry_on=TRANSIENT,
                         interval=0.2, max_interval=0.5)
        except LabTimeout as exc:
            hint = self.diag_hint or ""
            raise LabTimeout(exc.what, exc.timeout, exc.last, hint) from None

    def wait_task_state(self, state: str, task: str | None = None,
                        timeout: float | None = None) -> dict:
        task = task or self.tasks[0]

        def check(alloc):
            ts = ((alloc or {}).get("TaskStates") or {}).get(task) or {}
            return ts if ts.get("State") == state else None

        return self._wait(check, f"task {task} {state}", timeout)

    def wait_running(self, task: str | None = None, timeout: float | None = None) -> dict:
        alloc = self.wait_task_state("running", task, timeout)
        self._milestone("running")
        return alloc

    def wait_dead(self, task: str | None = None, timeout: float | None = None) -> dict:
        alloc = self.wait_task_state("dead", task, timeout)
        self._milestone("dead")
        return alloc

    def wait_alloc_terminal(self, timeout: float | None = None) -> dict:
        return self._wait(lambda a: a if a and a.get("ClientStatus") in TERMINAL_ALLOC else None,
                          "allocation terminal (complete/failed/lost)", timeout)

    def wait_event(self, event_type: str, task: str | None = None,
                   timeout: float | None = None, count: int = 1,
                   timeout_name: str = "event") -> dict:
        """Wait until the task has `count` events of `event_type`; return the last one."""
        task = task or self.tasks[0]

        def check(alloc):
            events = [e for e in (((alloc or {}).get("TaskStates") or {}).get(task) or {})
                      .get("Events") or [] if e["Type"] == event_type]
            return events[count - 1] if len(events) >= count else None

        t = timeout if timeout is not None else self.timeout(timeout_name)
        return self._wait(check, f"task {task} event {event_type!r} x{count}", t)

    def wait_log(self, text: str, task: str | None = None, stream: str = "stdout",
                 timeout: float | None = None) -> str:
        """Wait until `text` appears in the task's stdout/stderr; return the whole log."""
        task = task or self.tasks[0]
        seen = {"log": ""}

        def check():
            seen["log"] = self.logs(task, stream)
            return seen["log"] if text in seen["log"] else Pending(
                f"{stream} so far: {seen['log'][-300:]!r}")

        t = timeout if timeout is not None else self.timeout("job")
        try:
            return until(check, t, f"job {self.id}: {text!r} in {task} {stream}",
                         retry_on=TRANSIENT, interval=0.3)
        except LabTimeout as exc:
            raise LabTimeout(exc.what, exc.timeout, exc.last, self.diag_hint) from None

    def wait_evaluation_failed_placement(self, timeout: float | None = None) -> dict:
        """Wait for an evaluation of this job that could not place (FailedTGAllocs set)."""

        def check():
            evals = self.api.job_evaluations(self.id)
            failed = [e for e in evals if e.get("FailedTGAllocs")]
            return failed[0] if failed else Pending(
                [(e["Status"], e.get("StatusDescription")) for e in evals] or "no evaluation")

        t = timeout if timeout is not None else self.timeout("job")
        return until(check, t, f"job {self.id}: an evaluation with failed placements",
                     retry_on=TRANSIENT)

    # -- control -------------------------------------------------------------------------
    def stop(self, purge: bool = False) -> None:
        self.api.deregister(self.id, purge=purge)

    def signal(self, signal: str, task: str | None = None) -> None:
        alloc = self.alloc()
        if not alloc:
            raise LabTimeout(f"job {self.id} to have an allocation to signal", 0, "none")
        self.api.signal(alloc["ID"], signal, task or self.tasks[0])
