"""cgroup modes: a lab boots the mode it asked for (LAB_CGROUP); on a cgroup v1 lab the driver
refuses with a fingerprint reason naming cgroup v1 and a job is not placed.

The java-crun driver is cgroup v2 only today. On a v2 lab the v1 tests skip with the reason
(the report counts them); on a v1 lab every test that needs a healthy driver (the `agent`
fixture) skips (tests/e2e/conftest.py), and these tests are what runs there.
"""

from __future__ import annotations

import itertools
import json
import re

import pytest

from lab.core.errors import LabTimeout
from lab.core.wait import Pending, until
from lab.nomad.agent import NomadAgent
from lab.nomad.api import TRANSIENT
from lab.nomad.jobrun import JobRun
from lab.nomad.jobs import java_job, java_task, job_id
from lab.remote.layout import DRIVER

# The mode as crun and the driver see it: v2 (unified), hybrid (v1 plus a cgroup2 hierarchy:
# crun refuses it), v1 (pure legacy) or none.
MODE_SCRIPT = r"""
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then echo v2
elif grep -q ' cgroup2 ' /proc/mounts; then echo hybrid
elif grep -q ' cgroup ' /proc/mounts; then echo v1
else echo none; fi
"""
V1_REASON = re.compile(r"cgroup (mode is )?v1\b")
_seq = itertools.count(900)  # agent numbers of this module: apart from the plugin's own


@pytest.fixture(scope="module")
def cgroup_mode(lab_host) -> str:
    return lab_host.run(MODE_SCRIPT).stdout.strip()


@pytest.fixture
def cgroup_v1(cgroup_mode):
    if cgroup_mode != "v1":
        pytest.skip(f"the lab host runs cgroup {cgroup_mode}: the driver's v1 refusal is "
                    "tested on a cgroup v1 lab (LAB_CGROUP=v1 ./invoke lab.up test)")


class AgentWithoutHealthyDriver(NomadAgent):
    """A lab agent that is ready without a healthy java-crun: it starts like any other (its
    unit, ports, tunnel), but its start-up wait is cut short instead of requiring the driver
    healthy; the test then waits for the driver's fingerprint itself."""

    def _run_start_script(self, mode: str, config: str, timeout: float | None = None) -> None:
        if mode == "wait":
            return super()._run_start_script(mode, config, timeout)
        try:
            super()._run_start_script(mode, config, timeout=1)
        except LabTimeout:
            pass  # the unit runs; a dead one raises LabError (exit 3), not LabTimeout


@pytest.fixture
def unhealthy_agent(lab_config, lab_host, cgroup_v1):
    agent = AgentWithoutHealthyDriver(
        lab_host, lab_config.run_id, next(_seq), ready_timeout=lab_config.timeout("agent_ready"),
        stop_timeout=lab_config.timeout("agent_stop"))
    agent.start()
    try:
        yield agent
    finally:
        problems = agent.drain()
        agent.stop(check=False)
        assert not problems, problems


def fingerprinted_driver(agent: NomadAgent, timeout: float) -> dict:
    """The node's java-crun entry once the driver was fingerprinted (healthy or not)."""
    def check():
        node = agent.api.node_by_name(agent.id)
        if not node:
            return Pending(f"node {agent.id} not registered yet")
        info = agent.api.node(node["ID"]).get("Drivers", {}).get(DRIVER)
        if not info or not info.get("Detected"):
            return Pending(f"driver {DRIVER} not fingerprinted yet: {info}")
        return info

    return until(check, timeout, f"driver {DRIVER} fingerprinted on node {agent.id}",
                 retry_on=TRANSIENT)


def test_the_lab_boots_the_cgroup_mode_it_asked_for(lab_config, cgroup_mode):
    if not lab_config.is_vagrant:
        pytest.skip(f"an ssh:// host runs the mode it was booted with ({cgroup_mode})")
    assert cgroup_mode == lab_config.cgroup, (
        f"LAB_CGROUP={lab_config.cgroup} but the lab host runs {cgroup_mode}: see the kernel "
        "command line in .lab/<lab>/vm.json and provision/guest-setup.sh's output")


def test_on_cgroup_v1_the_driver_is_unhealthy_with_a_reason_naming_v1(unhealthy_agent,
                                                                      lab_config):
    info = fingerprinted_driver(unhealthy_agent, lab_config.timeout("agent_ready"))

    assert info["Healthy"] is False, info
    assert V1_REASON.search(info.get("HealthDescription", "")), info


def test_on_cgroup_v1_a_job_is_not_placed(unhealthy_agent, lab_config, artifacts, request):
    fingerprinted_driver(unhealthy_agent, lab_config.timeout("agent_ready"))
    job = java_job(job_id(lab_config.run_id, request.node.name),
                   [java_task("app", artifacts.exposed.url("hello.jar"))])

    run = JobRun(unhealthy_agent.api, job, lab_config.timeout).submit()
    evaluation = run.wait_evaluation_failed_placement()

    assert unhealthy_agent.api.job_allocations(run.id) == []
    failed = json.dumps(evaluation["FailedTGAllocs"])
    assert "missing drivers" in failed or DRIVER in failed, failed
