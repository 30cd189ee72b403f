"""steps: each step announced and timed; a failing step says FAILED and re-raises."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from lab.core import steps as steps_mod
from lab.core.steps import Steps


class Ticker:
    """time.monotonic stand-in: each call advances by the next scripted amount."""

    def __init__(self, *advances: float):
        self.now, self.advances = 100.0, list(advances)

    def __call__(self) -> float:
        self.now += self.advances.pop(0) if self.advances else 0.0
        return self.now


@pytest.fixture
def clock(monkeypatch):
    """Replace lab.core.steps' view of `time` only (not the time module everyone shares)."""
    ticker = Ticker()
    monkeypatch.setattr(steps_mod, "time", SimpleNamespace(monotonic=ticker))
    return ticker


def test_steps_are_announced_timed_and_summed(clock):
    lines: list[str] = []
    steps = Steps("lab.up", out=lines.append)
    with steps.step("host"):
        clock.now += 1.25
    with steps.step("vm"):
        clock.now += 36.0
    assert steps.timings == {"host": pytest.approx(1.25), "vm": pytest.approx(36.0)}
    assert lines == ["==> host", "<== host ok (1.2s)", "==> vm", "<== vm ok (36.0s)"]
    clock.now += 0.5
    summary = steps.summary().splitlines()
    assert summary[0] == "lab.up: 37.8s"
    assert [re.split(r"\s+", row.strip()) for row in summary[1:]] == [
        ["host", "1.2s"], ["vm", "36.0s"]]


@pytest.mark.parametrize("error", [RuntimeError("vagrant up failed"), KeyboardInterrupt()])
def test_a_failing_step_is_reported_and_re_raised(clock, error):
    lines: list[str] = []
    steps = Steps("lab.up", out=lines.append)
    with pytest.raises(type(error)):
        with steps.step("vm"):
            clock.now += 3.0
            raise error
    assert lines == ["==> vm", "<== vm FAILED after 3.0s"]
    assert steps.timings == {"vm": pytest.approx(3.0)}


def test_summary_before_any_step(clock):
    assert Steps("bench", out=lambda line: None).summary() == "bench: 0.0s"
