"""What every fault shares: its record, the journal, and inject / check / heal as one pattern.

Modelled on Jepsen's nemesis: a fault is a start/stop pair that records what it did. A fault
(one function in a family module, registered in lab.faults.registry) first probes the host
read-only and returns a Plan: steps that inject, check, heal and check the heal, each a call
of a script in lab/faults/scripts. `apply` then
    1. in one round trip, saves the heal steps on the lab host (STATE_DIR/<fault>-<token>.sh),
       *then* injects, then checks the fault is in effect (FaultNotInjected otherwise), so a
       SIGKILLed pytest leaves a recipe that `sweep()` runs;
    2. yields the FaultRecord (`record.details` names paths, pids, what the check saw...);
    3. in `finally`, runs the idempotent heal and checks the original state is back
       (HealFailed otherwise), retrying while SSH itself is unavailable.
"""

from __future__ import annotations

import json
import secrets
import shlex
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lab.core.errors import CommandFailed, LabError, LabTimeout
from lab.core.wait import Pending, until
from lab.remote.host import script_command

SCRIPTS = Path(__file__).resolve().parent / "scripts"  # the faults' shell, run inline
STATE_DIR = "/var/lib/lab-faults"  # heal scripts of faults in effect (survives a reboot)
HEAL_TIMEOUT = 60.0  # how long a heal keeps retrying while SSH is down
CHECK_MARK = "__lab_fault_check__"  # fault.sh apply: the check's output follows this line
NOT_IN_EFFECT = 86  # fault.sh apply: injected, but the check says the fault is not in effect
PRECONDITION = 3  # a probe's exit code when the host is not fit for the fault (stderr: why)


class Host(Protocol):  # what faults need from lab.remote.host.LabHost
    name: str

    def sudo(self, cmd: str, **kwargs) -> Any: ...


class FaultError(LabError):
    """A fault could not be injected (its precondition failed); nothing was changed."""


class FaultNotInjected(FaultError):
    """The injection ran but the fault is not in effect (the fault was healed again)."""


class HealFailed(LabError):
    """The heal did not bring the original state back: the lab host needs attention."""


# -- journal ---------------------------------------------------------------------------------
@dataclass
class FaultRecord:
    """What one fault did. Times are wall-clock (time.time()), comparable with Nomad's events."""

    name: str
    host: str
    token: str
    details: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    injected_at: float | None = None
    # The heal runs between these two: the fault may already be gone at heal_started_at.
    heal_started_at: float | None = None
    healed_at: float | None = None
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.healed_at is None

    def __str__(self) -> str:
        def at(t):
            return time.strftime("%H:%M:%S", time.localtime(t)) if t else "-"
        state = "healed" if self.healed_at else "ACTIVE"
        error = f" error={self.error}" if self.error else ""
        return (f"{self.name}@{self.host} injected={at(self.injected_at)} "
                f"healed={at(self.healed_at)} {state}{error} {json.dumps(self.details)}")


class Journal:
    """Every fault injected in this process, in order (the nemesis history)."""

    def __init__(self):
        self._records: list[FaultRecord] = []
        self._lock = threading.Lock()

    def open(self, host: Host, name: str, details: dict[str, Any]) -> FaultRecord:
        record = FaultRecord(name, host_name(host), secrets.token_hex(4), dict(details))
        with self._lock:
            self._records.append(record)
        return record

    def records(self, host: str | None = None) -> list[FaultRecord]:
        with self._lock:
            return [r for r in self._records if host is None or r.host == host]

    def active(self) -> list[FaultRecord]:
        return [r for r in self.records() if r.active]

    def summary(self) -> str:
        return "\n".join(str(r) for r in self.records()) or "(no faults injected)"

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


JOURNAL = Journal()


def host_name(host: Host) -> str:
    return getattr(host, "name", str(host))


# -- steps: calls of the scripts in lab/faults/scripts ----------------------------------------
@dataclass(frozen=True)
class Step:
    """`<script> <args...>` for one script in lab/faults/scripts, run on the lab host."""

    script: str
    args: tuple[str, ...] = ()

    def command(self) -> str:
        """The command line, with the script's text inline (lab.remote.host.script_command)."""
        return script_command(self.script, list(self.args), scripts_dir=SCRIPTS)

    def subshell(self) -> str:
        """The same, run in a subshell of the calling bash: a fork, no bash started (~0.15 s
        under TCG), for the scans that run after every test. $0 stays the caller's."""
        args = " ".join(shlex.quote(a) for a in self.args)
        return f"( set -- {args}\n{(SCRIPTS / self.script).read_text()}\n)"

    def __str__(self) -> str:
        return " ".join([self.script, *self.args])


def call(script: str, *args: object) -> Step:
    return Step(script, tuple(str(a) for a in args))


def shell(steps: Sequence[Step]) -> str:
    """The steps as one shell text, one command a line."""
    return "\n".join(step.command() for step in steps)


@dataclass
class Plan:
    """What a fault will do, decided by its read-only probe before anything changes."""

    details: dict[str, Any]
    inject: list[Step]  # run in order, stop at the first failure
    heal: list[Step]  # idempotent; also saved on the host for sweep()
    check: list[Step]  # exit 0 iff the fault is in effect; stdout -> details["observed"]
    healed: list[Step]  # exit 0 iff the original state is back; stderr says what is wrong


def probe(host: Host, what: str, *steps: Step) -> str:
    """Run read-only steps in one round trip and return their output; exit PRECONDITION means
    the host is not fit for the fault and stderr says why (FaultError)."""
    res = host.sudo("set -e\n" + shell(steps), check=False)
    if res.rc == PRECONDITION:
        raise FaultError(f"{what} on {host_name(host)}: {res.stderr.strip()}")
    if not res.ok:
        raise CommandFailed(host_name(host), "; ".join(map(str, steps)), res.rc, res.stderr,
                            res.stdout, hint=what)
    return res.stdout


# -- apply: save the heal, inject, check; always heal -----------------------------------------
def heal_path(record: FaultRecord) -> str:
    return f"{STATE_DIR}/{record.name}-{record.token}.sh"


@contextmanager
def apply(host: Host, name: str, plan: Plan,
          journal: Journal | None = None) -> Iterator[FaultRecord]:
    record = (journal or JOURNAL).open(host, name, plan.details)
    saved = heal_path(record)
    try:
        # One round trip (each costs ~1 s under TCG): save the heal, inject, then check.
        res = host.sudo(call("fault.sh", "apply", saved, shell(plan.heal), shell(plan.inject),
                             shell(plan.check)).command(), check=False)
        if CHECK_MARK not in res.stdout:
            raise CommandFailed(record.host, f"inject {name}: " + "; ".join(map(str, plan.inject)),
                                res.rc, res.stderr, res.stdout,
                                hint=f"injecting {name} failed; it was healed again")
        observed = res.stdout.split(CHECK_MARK, 1)[1].strip()
        if not res.ok:
            raise FaultNotInjected(
                f"{name} on {record.host}: injected but not in effect: "
                f"{res.stderr.strip() or observed or 'check exited ' + str(res.rc)}")
        record.details["observed"] = observed
        record.injected_at = time.time()
    except BaseException as exc:
        record.error = f"not injected: {exc}"
        _heal(host, name, plan, record, saved)
        raise
    try:
        yield record
    finally:
        _heal(host, name, plan, record, saved)


def _heal(host: Host, name: str, plan: Plan, record: FaultRecord, saved: str) -> None:
    command = call("fault.sh", "heal", saved, shell(plan.heal), shell(plan.healed)).command()
    record.heal_started_at = time.time()

    def attempt():
        try:
            return host.sudo(command, check=False)
        except CommandFailed as exc:
            if exc.rc is None:  # SSH down or timed out: the heal must still happen
                return Pending(str(exc).splitlines()[0])
            raise

    try:
        res = until(attempt, HEAL_TIMEOUT, f"the heal of {name} on {record.host}",
                    interval=0.5)
    except LabTimeout as exc:
        record.error = f"heal not run: {exc}"
        raise HealFailed(f"{name} on {record.host} could not be healed: {exc}\nfix: when "
                         f"the host is reachable run `./invoke lab.clean` (it runs "
                         f"{saved})") from exc
    if not res.ok:
        record.error = (res.stderr or res.stdout).strip()
        raise HealFailed(f"{name} on {record.host}: after healing the original state is "
                         f"not back: {record.error}\nfix: inspect with `./invoke lab.ssh`; "
                         f"`./invoke lab.clean` retries every pending heal")
    record.healed_at = time.time()
