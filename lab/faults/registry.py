"""The registry of faults, and the sweep and scan derived from it.

Every fault is registered once, with the markers it leaves on the lab host while in effect.
A Marker says how the janitor finds those traces (`<script> scan`) and removes them without
the journal (`<script> sweep`), so `sweep()` and `scan()` cover exactly what the registered
faults can leave: adding a fault with a new kind of trace adds it to both, and nothing else
has to change.

    @fault(MOVED_ASIDE)               # lab/faults/files.py: files renamed to *.lab-hidden
    def java_missing(host, ...) -> Plan:
        ...                           # probe read-only, then say how to inject/check/heal

`java_missing(host)` is then a context manager that runs that plan (framework.apply).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from lab.faults import framework
from lab.faults.framework import JOURNAL, FaultRecord, HealFailed, Host, Journal, Plan, Step

# Where faults move files aside or put wrappers (the JREs, crun, a java_home under /opt):
# walking all of /usr takes seconds under TCG, and scan() runs after every test. A fault
# elsewhere is still healed from its heal script in STATE_DIR.
SWEEP_ROOTS = ("/usr/lib/jvm", "/usr/bin", "/usr/sbin", "/usr/local", "/opt")


@dataclass(frozen=True)
class Marker:
    """A kind of trace faults leave on the lab host while in effect, and how it is found and
    removed from the host's own state: `<script> scan ARGS` prints one line per trace;
    `<script> sweep ARGS` removes every trace, printing `healed: ...` for each (and
    `FAILED: ...` on stderr for one it could not). ARGS depend on `scope`: "roots" (the
    directories to search), "state" (the heal-script directory) or "host" (none)."""

    name: str  # the word a scan line starts with: "moved-aside /usr/bin/crun.lab-hidden"
    script: str  # in lab/faults/scripts
    scope: str = "host"

    def step(self, action: str, roots: Sequence[str]) -> Step:
        args = {"roots": list(roots), "state": [framework.STATE_DIR], "host": []}[self.scope]
        return framework.call(self.script, action, *args)


# The heal scripts of faults in effect: every fault leaves one, and sweep runs them first.
PENDING = Marker("heal-pending", "fault.sh", scope="state")


@dataclass(frozen=True)
class Fault:
    """One registered fault: its journal name, the markers it leaves, and its plan (None for
    a fault the lab does not heal, e.g. a killed plugin that Nomad relaunches)."""

    name: str
    markers: tuple[Marker, ...]
    plan: Callable[..., Plan] | None = None


# `... | prefix NAME`: each line as "NAME line", by a bash loop (no sed started per use: ~0.1 s
# under TCG); each line is one write, whole, so scans running at once do not mix lines.
PREFIX = 'prefix() { while IFS= read -r l; do printf \'%s %s\\n\' "$1" "$l"; done; }'


class Registry:
    """The faults lab.faults can inject, in registration order."""

    def __init__(self, faults: Sequence[Fault] = ()):
        self._faults: dict[str, Fault] = {}
        for entry in faults:
            self.add(entry)

    def add(self, entry: Fault) -> Fault:
        if entry.name in self._faults:
            raise ValueError(f"a fault named {entry.name!r} is registered already")
        self._faults[entry.name] = entry
        return entry

    def copy(self) -> Registry:
        return Registry(list(self))

    def __iter__(self) -> Iterator[Fault]:
        return iter(list(self._faults.values()))

    def get(self, name: str) -> Fault | None:
        return self._faults.get(name)

    def fault(self, *markers: Marker) -> Callable[[Callable[..., Plan]], Callable]:
        """Register `plan(host, ...) -> Plan` under its own name; the decorated name becomes
        the fault's context manager, taking the same arguments plus `journal=`."""
        def register(plan: Callable[..., Plan]) -> Callable[..., Iterator[FaultRecord]]:
            entry = self.add(Fault(plan.__name__, (PENDING, *markers), plan))

            @functools.wraps(plan)
            def run(host: Host, *args, journal: Journal | None = None,
                    **kwargs) -> Iterator[FaultRecord]:
                with framework.apply(host, entry.name, plan(host, *args, **kwargs),
                                     journal) as record:
                    yield record

            return contextmanager(run)

        return register

    def markers(self) -> list[Marker]:
        """Every marker a registered fault can leave, once each; pending heals first."""
        seen: dict[str, Marker] = {PENDING.name: PENDING}
        for entry in self:
            for marker in entry.markers:
                seen.setdefault(marker.name, marker)
        return list(seen.values())

    def scan_script(self, roots: Sequence[str] = SWEEP_ROOTS) -> str:
        """One round trip: a line "<marker> <trace>" per fault trace on the host, in no
        particular order. The markers' scans run at once, each in a subshell (a walk of the
        roots or a tc/iptables listing: ~0.15 s apiece under TCG, with a bash of its own
        ~0.3 s), each line prefixed by a bash loop rather than a sed started per marker; a
        line is one write, whole."""
        return "\n".join([PREFIX]
                         + [f"{{ {m.step('scan', roots).subshell()} | prefix {m.name}; }} &"
                            for m in self.markers()] + ["wait", "true"])

    def sweep_script(self, roots: Sequence[str] = SWEEP_ROOTS) -> str:
        return "\n".join([m.step("sweep", roots).command() for m in self.markers()]
                         + ["true"])

    def scan(self, host: Host, roots: Sequence[str] = SWEEP_ROOTS) -> list[str]:
        """Fault traces still on the host (empty when every fault was healed)."""
        return [line for line in host.sudo(self.scan_script(roots), check=False)
                .stdout.splitlines() if line.strip()]

    def sweep(self, host: Host, roots: Sequence[str] = SWEEP_ROOTS) -> list[str]:
        """Heal every trace a registered fault can leave, from the host's own markers
        (pending heal scripts first), whatever the journal says. Idempotent; returns what it
        healed. Raises HealFailed if something could not be healed."""
        res = host.sudo(self.sweep_script(roots), check=False, timeout=120)
        healed = [line for line in res.stdout.splitlines() if line.startswith("healed:")]
        if not res.ok or "FAILED" in res.stderr:
            raise HealFailed(f"lab.faults.sweep on {framework.host_name(host)} could not heal "
                             f"everything:\n{res.stderr.strip()}\nfix: inspect with "
                             "`./invoke lab.ssh`")
        for record in JOURNAL.active():
            entry = self.get(record.name)
            if record.host == getattr(host, "name", None) and (entry is None or entry.markers):
                record.healed_at = time.time()
                record.details["healed_by"] = "sweep"
        return healed


REGISTRY = Registry()
fault = REGISTRY.fault
