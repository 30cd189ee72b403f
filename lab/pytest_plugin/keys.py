"""What the plugin's modules share: stash keys and the session's configuration."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from lab.checks import record
from lab.core.config import LabConfig
from lab.nomad.agent_pool import AgentPool

FACTS_KEY = pytest.StashKey[dict]()
POOL_KEY = pytest.StashKey[AgentPool]()
NEXT_KEY = pytest.StashKey[pytest.Item | None]()
CONTROLLER_KEY = pytest.StashKey[ExitStack]()
LAB_CONFIG_KEY = pytest.StashKey[LabConfig]()
PHASES_KEY = pytest.StashKey[list]()  # [(phase, seconds)] of one test, shown with -v
RECORD_KEY = pytest.StashKey[record.Record]()
HOST_KEY = pytest.StashKey[object]()  # the session's LabHost, for bundles of setup failures
MADE_KEY = pytest.StashKey[dict]()  # test id -> its agent, kept for one that fails to start
MAKING_KEY = pytest.StashKey[str]()  # the test id the pool makes an agent for
REPORTING_KEY = pytest.StashKey[object]()  # reporting.Reporting
DURATIONS_KEY = pytest.StashKey[dict]()  # xdist controller: recorded durations for its workers
GUARD_KEY = pytest.StashKey[object]()  # guest.GuestGuard: the session's guest watch
KERNEL_SPAN_KEY = pytest.StashKey[object]()  # where the next test's kernel-log span starts
# Since the last leftover scan that covered faults: {"since": when it ran, "exclusive": whether
# an exclusive test (which may have run an inner run's faults) ran} (lab.checks.teardown).
FAULT_SCAN_KEY = pytest.StashKey[dict]()
# Fixtures whose tests change the lab host for everybody: an inner pytest session sweeps the
# host when it starts, so nothing else may run there meanwhile.
EXCLUSIVE_FIXTURES = {"inner_runs", "pytester"}


def worker() -> str | None:
    """The xdist worker id (gw0, gw1...) when this process is one."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def parallel(config) -> bool:
    return bool(worker()) or bool(getattr(config.option, "numprocesses", None))


def reports_dir(config) -> Path:
    given = config.getoption("--lab-reports")
    return Path(given).resolve() if given else lab_config(config).reports_dir


def lab_config(config) -> LabConfig:
    """The session's one LabConfig (its run id is the one the header and every agent use); an
    xdist worker's is bound to its own lab host when the run has several."""
    found = config.stash.get(LAB_CONFIG_KEY, None)
    if found is None:
        opt = config.getoption
        given = opt("--lab-target") or []
        # Given here, it wins over LAB_TARGET and LAB_TARGETS alike.
        found = LabConfig.load({"targets": ",".join(given) or None,
                                "ssh_key": opt("--lab-ssh-key"),
                                "timeout_scale": opt("--lab-timeout-scale"),
                                "keep": opt("--lab-keep")}).for_worker(worker())
        config.stash[LAB_CONFIG_KEY] = found
    return found
