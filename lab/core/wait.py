"""The lab's one readiness primitive: poll a state under a single deadline.

`until(check, timeout, what)` calls `check()` until it returns something truthy and returns
that. A falsy return (or a `Pending(observation)`) is remembered as the last observation, so
a timeout reports what the state actually was instead of just "timed out".

A wait also ends early when something that makes it pointless happened elsewhere: each
registered interrupt (`interrupting(check)`) is called between polls and may raise (the guest
watch raises HostLost when the lab host's kernel panicked: no job will ever come up then).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from lab.core.errors import LabTimeout

T = TypeVar("T")

_interrupts: list[Callable[[], None]] = []


@contextmanager
def interrupting(check: Callable[[], None]) -> Iterator[None]:
    """While in the block, every wait calls check() between polls; what it raises ends the
    wait (and propagates)."""
    _interrupts.append(check)
    try:
        yield
    finally:
        _interrupts.remove(check)


class Pending:
    """A falsy result that carries what was observed, for the timeout message."""

    def __init__(self, observation: object):
        self.observation = observation

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Pending({self.observation!r})"


def until(
    check: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.25,
    max_interval: float = 2.0,
    retry_on: tuple[type[BaseException], ...] = (),
    hint: str = "",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Poll `check` until it returns a truthy value; raise LabTimeout at the deadline.

    Exceptions listed in `retry_on` count as observations (a tunnel that is not up yet),
    anything else propagates at once: a dead process must fail fast, not wait out the clock.
    """
    deadline = clock() + timeout
    last: object = None
    delay = interval
    while True:
        try:
            result = check()
        except retry_on as exc:  # noqa: PERF203 - polling loop
            last = f"{type(exc).__name__}: {exc}"
        else:
            if result:
                return result
            last = result.observation if isinstance(result, Pending) else result
        for interrupt in list(_interrupts):
            interrupt()
        remaining = deadline - clock()
        if remaining <= 0:
            raise LabTimeout(what, timeout, last, hint)
        sleep(min(delay, remaining))
        delay = min(delay * 1.5, max_interval)
