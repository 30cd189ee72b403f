"""AgentPool: start the next test's Nomad agent while the current test runs.

A fresh agent takes seconds to get ready (under TCG, about five), and every test gets its own.
The pytest plugin asks the pool to start the next test's agent in a background thread as soon
as the current test's body begins, so the next test finds it ready. Only agents with the very
options the next test asks for are handed over; anything not taken is stopped at close().
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from lab.nomad.agent import AgentOptions, NomadAgent


@dataclass
class _Ahead:
    agent: NomadAgent
    options: AgentOptions
    future: Future


class AgentPool:
    """make(options) builds an unstarted NomadAgent; start_ahead/take hand it to a test."""

    def __init__(self, make: Callable[[AgentOptions], NomadAgent]):
        self._make = make
        self._ahead: dict[str, _Ahead] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-ahead")

    def start_ahead(self, key: str, options: AgentOptions) -> None:
        """Begin starting the agent for test `key` (no-op if one is already on its way)."""
        if key not in self._ahead:
            agent = self._make(options)
            self._ahead[key] = _Ahead(agent, options, self._executor.submit(agent.start))

    def take(self, key: str, options: AgentOptions) -> tuple[NomadAgent, float]:
        """The ready agent for test `key` and how long the test waited for it.

        One started ahead with other options is stopped and a fresh one started; a start that
        failed in the background raises here, in the test that needed it.
        """
        began = time.monotonic()
        ahead = self._ahead.pop(key, None)
        if ahead and ahead.options == options:
            agent = ahead.future.result()
        else:
            if ahead:
                self._discard(ahead)
            agent = self._make(options).start()
        return agent, time.monotonic() - began

    def live_ids(self) -> list[str]:
        """Agents started (or starting) ahead and not taken yet: not any test's leftovers."""
        return [ahead.agent.id for ahead in self._ahead.values()]

    def drop_ahead(self) -> None:
        """Stop every agent started ahead (before a sweep that would kill them anyway)."""
        for ahead in self._ahead.values():
            self._discard(ahead)
        self._ahead.clear()

    def forget_ahead(self) -> None:
        """Let go of every agent started ahead without stopping it: the lab host that ran it
        was lost, and restarts with nothing running (lab/pytest_plugin/guest.py)."""
        for ahead in self._ahead.values():
            try:
                ahead.future.result()  # ends at once: every command on a lost host fails
            except Exception:  # noqa: BLE001, S110 - its host is gone: nothing to tear down
                pass
            ahead.agent.close_tunnel()
        self._ahead.clear()

    def close(self) -> None:
        self.drop_ahead()
        self._executor.shutdown(wait=True)

    @staticmethod
    def _discard(ahead: _Ahead) -> None:
        try:
            ahead.future.result()
        except Exception:  # noqa: BLE001 - a failed start has already torn itself down
            return
        ahead.agent.drain()
        ahead.agent.stop(check=False)
