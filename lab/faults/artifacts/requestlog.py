"""What the artifact server saw: one RequestRecord per request, and waits on them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from lab.core.errors import LabTimeout
from lab.core.wait import Pending, until


@dataclass
class RequestRecord:
    """One request as the server saw it; `outcome` is set when the response ends.

    outcome: in-progress, complete, reset (RST sent), client-gone (the client closed or the
    write failed: e.g. it timed out), error-status (an injected status), not-found,
    bad-range (416), aborted (the server stopped mid-response).
    mode: the failure mode that applied (stall, reset, status), "slow" if only throttled,
    else None.
    """

    name: str
    method: str
    range: str | None
    started_at: float
    status: int = 0
    mode: str | None = None
    bytes_sent: int = 0
    outcome: str = "in-progress"
    finished_at: float | None = None

    @property
    def done(self) -> bool:
        return self.outcome != "in-progress"

    def __str__(self) -> str:
        took = f"{self.finished_at - self.started_at:.2f}s" if self.finished_at else "running"
        rng = f" range={self.range}" if self.range else ""
        mode = f" mode={self.mode}" if self.mode else ""
        return (f"{self.method} {self.name}{rng} -> {self.status or '-'} {self.outcome}{mode} "
                f"sent={self.bytes_sent} ({took})")


class RequestLog:
    """Every request, oldest first; records of finished requests do not change any more."""

    def __init__(self):
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()

    def start(self, name: str, method: str, range_header: str | None) -> RequestRecord:
        record = RequestRecord(name, method, range_header, time.time())
        with self._lock:
            self._records.append(record)
        return record

    def records(self, name: str | None = None) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self._records if name is None or r.name == name]

    def wait_for(self, name: str, timeout: float, outcome: str | None = None,
                 method: str = "GET") -> RequestRecord:
        """Wait for a finished request for `name` (with `outcome`, if given) and return it."""
        def check():
            seen = [r for r in self.records(name) if r.method == method]
            for record in seen:
                if record.done and (outcome is None or record.outcome == outcome):
                    return record
            return Pending([str(r) for r in seen] or "no request yet")
        return until(check, timeout,
                     f"a {method} of artifact {name!r}" + (f" ending {outcome}" if outcome else ""))

    def settle(self, timeout: float = 2.0) -> None:
        """Let woken responses record how they ended; one stuck writing to a client that no
        longer reads is marked aborted rather than holding up teardown."""
        def settled():
            running = [str(r) for r in self.records() if not r.done]
            return Pending(running) if running else True
        try:
            until(settled, timeout, "in-flight artifact responses to end", interval=0.01)
        except LabTimeout:
            for record in self.records():
                if not record.done:
                    record.outcome = "aborted"

    def summary(self) -> str:
        """One line per request, for a failure report."""
        return "\n".join(str(r) for r in self.records()) or "(no requests)"
