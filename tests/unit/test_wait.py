"""wait.until: one deadline, the last observation in the timeout, no real sleeping."""

from __future__ import annotations

import pytest
from fakes import FakeClock

from lab.core.errors import LabTimeout
from lab.core.wait import Pending, until


def run(check, timeout=10.0, clock=None, **kwargs):
    clock = clock or FakeClock()
    return until(check, timeout, "the thing", clock=clock, sleep=clock.sleep, **kwargs)


def answers(*values):
    it = iter(values)

    def check():
        value = next(it)
        if isinstance(value, BaseException):
            raise value
        return value

    return check


def test_returns_the_first_truthy_value_without_sleeping_when_ready():
    clock = FakeClock()
    assert run(answers({"ID": "n1"}), clock=clock) == {"ID": "n1"}
    assert clock.sleeps == []


def test_polls_until_truthy_and_returns_it():
    clock = FakeClock()
    assert run(answers(None, Pending("booting"), [], "ready"), clock=clock) == "ready"
    assert len(clock.sleeps) == 3


def test_pending_observation_is_named_in_the_timeout():
    clock = FakeClock()
    with pytest.raises(LabTimeout) as info:
        run(lambda: Pending("node status=initializing"), timeout=5, clock=clock, hint="look")
    exc = info.value
    assert exc.last == "node status=initializing"
    assert "waiting for the thing; last seen: node status=initializing\nlook" in str(exc)
    assert clock.now == pytest.approx(1005.0), "gives up exactly at the deadline"


def test_last_falsy_value_is_the_observation():
    with pytest.raises(LabTimeout) as info:
        run(lambda: [], timeout=1)
    assert info.value.last == []


def test_retry_on_exceptions_count_as_observations():
    check = answers(ConnectionRefusedError("tunnel not up"), Pending("no leader"),
                    ConnectionRefusedError("still not up"), "ok")
    assert run(check, retry_on=(OSError,)) == "ok"

    with pytest.raises(LabTimeout) as info:
        run(answers(*[ConnectionRefusedError("refused")] * 100), timeout=3, retry_on=(OSError,))
    assert info.value.last == "ConnectionRefusedError: refused"


def test_other_exceptions_propagate_at_once():
    clock = FakeClock()
    with pytest.raises(RuntimeError, match="agent died"):
        run(answers(Pending("x"), RuntimeError("agent died"), "never"), clock=clock,
            retry_on=(OSError,))
    assert len(clock.sleeps) == 1


def test_backoff_grows_by_half_and_is_capped():
    clock = FakeClock()
    with pytest.raises(LabTimeout):
        run(lambda: None, timeout=30, clock=clock, interval=0.5, max_interval=2.0)
    assert clock.sleeps[:5] == pytest.approx([0.5, 0.75, 1.125, 1.6875, 2.0])
    assert max(clock.sleeps) == 2.0
    assert all(s == 2.0 for s in clock.sleeps[4:-1])


def test_never_sleeps_past_the_deadline():
    clock = FakeClock()
    with pytest.raises(LabTimeout):
        run(lambda: None, timeout=2.6, clock=clock, interval=1.0, max_interval=5.0)
    assert sum(clock.sleeps) == pytest.approx(2.6)
    assert clock.sleeps[-1] == pytest.approx(2.6 - 1.0 - 1.5)


def test_slow_checks_count_against_the_same_deadline():
    clock = FakeClock()
    calls = []

    def slow_check():
        calls.append(clock.now)
        clock.now += 4  # each check itself takes 4 s
        return None

    with pytest.raises(LabTimeout):
        run(slow_check, timeout=10, clock=clock)
    assert len(calls) == 3, "checks at t=0, ~4, ~8; the third one ends past the deadline"


def test_zero_timeout_checks_once():
    calls = []
    with pytest.raises(LabTimeout):
        run(lambda: calls.append(1), timeout=0)
    assert calls == [1]


def test_pending_is_falsy_and_readable():
    assert not Pending("x")
    assert repr(Pending("x")) == "Pending('x')"
