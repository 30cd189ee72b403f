"""Progress for long work: each step announced, timed, and summed up at the end."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Steps:
    def __init__(self, title: str, out: Callable[[str], None] = print):
        self.title, self.out = title, out
        self.timings: dict[str, float] = {}
        self._start = time.monotonic()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.out(f"==> {name}")
        start = time.monotonic()
        try:
            yield
        except BaseException:
            self.timings[name] = time.monotonic() - start
            self.out(f"<== {name} FAILED after {self.timings[name]:.1f}s")
            raise
        self.timings[name] = time.monotonic() - start
        self.out(f"<== {name} ok ({self.timings[name]:.1f}s)")

    @property
    def total(self) -> float:
        return time.monotonic() - self._start

    def summary(self) -> str:
        rows = [f"  {name:<10} {secs:7.1f}s" for name, secs in self.timings.items()]
        return "\n".join([f"{self.title}: {self.total:.1f}s", *rows])
