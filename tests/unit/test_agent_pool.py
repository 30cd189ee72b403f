"""AgentPool: a test gets the agent started ahead for it, with its own options, or a fresh one."""

from __future__ import annotations

import threading

import pytest

from lab.nomad.agent import AgentOptions
from lab.nomad.agent_pool import AgentPool


class FakeAgent:
    def __init__(self, seq: int, options: AgentOptions, fail: bool = False,
                 gate: threading.Event | None = None):
        self.id, self.options, self.fail, self.gate = f"nomad-lab-t-{seq}", options, fail, gate
        self.started = self.stopped = self.drained = False

    def start(self):
        if self.gate:
            self.gate.wait(5)
        if self.fail:
            raise RuntimeError(f"{self.id} never got ready")
        self.started = True
        return self

    def drain(self):
        self.drained = True
        return []

    def stop(self, check=True):
        self.stopped = True
        return []


@pytest.fixture
def made():
    return []


@pytest.fixture
def pool(made):
    def make(options, fail=False):
        agent = FakeAgent(len(made) + 1, options, fail=fail)
        made.append(agent)
        return agent

    p = AgentPool(make)
    yield p
    p.close()


def test_a_test_takes_the_agent_started_ahead_for_it(pool, made):
    pool.start_ahead("t2", AgentOptions())
    assert pool.live_ids() == ["nomad-lab-t-1"]
    agent, waited = pool.take("t2", AgentOptions())
    assert agent is made[0] and agent.started and waited >= 0
    assert pool.live_ids() == [] and len(made) == 1


def test_without_an_agent_ahead_a_fresh_one_is_started(pool, made):
    agent, _ = pool.take("t1", AgentOptions())
    assert agent.started and len(made) == 1


def test_an_agent_ahead_with_other_options_is_stopped_and_a_fresh_one_started(pool, made):
    pool.start_ahead("t2", AgentOptions())
    agent, _ = pool.take("t2", AgentOptions(persist=True))
    assert agent is made[1] and agent.options.persist
    assert made[0].stopped and made[0].drained


def test_start_ahead_twice_for_one_test_starts_one_agent(pool, made):
    pool.start_ahead("t2", AgentOptions())
    pool.start_ahead("t2", AgentOptions())
    assert len(made) == 1


def test_a_background_start_failure_is_raised_in_the_test_that_needed_it(made):
    pool = AgentPool(lambda options: made.append(FakeAgent(1, options, fail=True)) or made[-1])
    pool.start_ahead("t2", AgentOptions())
    with pytest.raises(RuntimeError, match="never got ready"):
        pool.take("t2", AgentOptions())
    pool.close()


def test_close_and_drop_ahead_stop_what_no_test_took(pool, made):
    pool.start_ahead("t2", AgentOptions())
    pool.drop_ahead()
    assert made[0].stopped and pool.live_ids() == []
    pool.start_ahead("t3", AgentOptions())
    pool.close()
    assert made[1].stopped
