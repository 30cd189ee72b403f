"""Fixtures for the unit tests of lab/: fakes only, no VM, no SSH, no real waiting."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# `from fakes import ...` works whatever pytest's import mode or package layout.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes import FakeClock, FakeHost  # noqa: E402

from lab.core import wait  # noqa: E402


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fast_waits(monkeypatch, clock):
    """Make lab.core.wait.until in the modules under test run on the fake clock (no real sleep).

    Returns the clock, so a test can assert how long a wait would have taken.
    """
    real_until = wait.until

    def until_on_fake_clock(check, timeout, what, **kwargs):
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("sleep", clock.sleep)
        return real_until(check, timeout, what, **kwargs)

    import lab.nomad.agent
    import lab.nomad.jobrun

    for module in (lab.nomad.agent, lab.nomad.jobrun):
        monkeypatch.setattr(module, "until", until_on_fake_clock)
    return clock


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def no_lab_env(monkeypatch):
    """Hide the developer's LAB_* variables from tests that read os.environ."""
    import os

    for key in [k for k in os.environ if k.startswith("LAB_")]:
        monkeypatch.delenv(key)
