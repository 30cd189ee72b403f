"""The artifact server's failure modes, per artifact name: rules used up by GETs, and rates."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from lab.faults.artifacts.content import ArtifactError, check_name


@dataclass
class Rule:
    kind: str  # stall | reset | status
    remaining: int | None  # None: every request
    after_bytes: int | None = 0
    seconds: float = 0.0
    code: int = 0


class FailureModes:
    """Thread-safe table of rules and rates by artifact name."""

    def __init__(self):
        self._rules: dict[str, list[Rule]] = {}
        self._rates: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str, rule: Rule) -> None:
        check_name(name)
        if rule.remaining is not None and rule.remaining < 1:
            raise ArtifactError(f"{rule.kind}({name!r}): times must be >= 1 or None (always)")
        with self._lock:
            self._rules.setdefault(name, []).append(rule)

    def take(self, name: str, consume: bool) -> Rule | None:
        """The first rule still active for `name`, counted down when `consume`."""
        with self._lock:
            for rule in self._rules.get(name, []):
                if rule.remaining is None or rule.remaining > 0:
                    if consume and rule.remaining is not None:
                        rule.remaining -= 1
                    return rule
            return None

    def slow(self, name: str, bytes_per_sec: int) -> None:
        if bytes_per_sec <= 0:
            raise ArtifactError(f"slow({name!r}, {bytes_per_sec}): the rate must be positive")
        with self._lock:
            self._rates[name] = int(bytes_per_sec)

    def rate(self, name: str) -> int | None:
        with self._lock:
            return self._rates.get(name)

    def clear(self, name: str | None = None) -> None:
        with self._lock:
            for table in (self._rules, self._rates):
                if name is None:
                    table.clear()
                else:
                    table.pop(name, None)
