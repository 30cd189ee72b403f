"""Recovery (beyond the stories): a running task outlives its driver plugin and its Nomad
agent. After `kill -9` of the plugin, and after a restart of the agent, the task's container
keeps running, Nomad recovers the task (no restart, no second start) and the task's real
exit code is reported when it ends.
"""

from __future__ import annotations

import pytest

from lab import faults
from lab.checks import probes

EXIT_CODE = 7  # sleeper's exit code: distinctive, so a recovered result cannot be a default
TICK_MS = 500


def running_containers(lab_host, agent) -> dict[str, int]:
    """crun's running containers of the agent's driver: container id -> init pid."""
    return probes.crun(lab_host, agent).running()


def ticks(run) -> int:
    return run.logs().count("tick ")


def sleeper_for(seconds: float, jobs):
    """A sleeper that logs a tick every TICK_MS and exits EXIT_CODE after `seconds`."""
    return jobs.run("sleeper", args=[f"{seconds:g}", str(EXIT_CODE)], env={"TICK_MS": str(TICK_MS)})


def assert_ran_once_and_reported(run) -> None:
    """One start, no restart, and the app's own exit code in the one Terminated event (a
    batch task exiting 7 has failed, and the job's policy allows no restart)."""
    state = run.task_state()
    lifecycle = [t for t in run.event_types()
                 if t in ("Started", "Restarting", "Terminated", "Not Restarting")]
    assert lifecycle == ["Started", "Terminated", "Not Restarting"], run.event_types()
    assert run.exit_codes() == [EXIT_CODE], run.events()[-3:]
    assert run.events()[-1]["DisplayMessage"] == "Policy allows no restarts", run.events()[-1]
    assert (state["Restarts"], state["Failed"]) == (0, True)
    assert f"sleeper finished, exiting with {EXIT_CODE}" in run.logs()


@pytest.mark.exclusive
@pytest.mark.agent(persist=True)  # the client must keep its state through the restart
def test_task_keeps_running_through_a_plugin_kill9_and_reports_its_real_exit_code(
        jobs, agent, lab_host, lab_config):
    """kill -9 of the plugin while a task runs: Nomad relaunches the plugin, the task's
    container is the same one, still running and still logging, the task is recovered (not
    restarted) and its real exit code (7) is reported when it ends."""
    # Long enough to outlive the kill, the relaunch (well under a second) and the checks.
    run = sleeper_for(10 + 3 * lab_config.scale, jobs)
    run.wait_log("tick 1")
    before = running_containers(lab_host, agent)
    assert len(before) == 1, before

    old_pid = faults.kill_plugin(lab_host)
    faults.wait_plugin_restarted(lab_host, old_pid, lab_config.timeout("agent_ready"))

    assert running_containers(lab_host, agent) == before, "the container did not survive the plugin"
    run.wait_log(f"tick {ticks(run) + 2}", timeout=lab_config.timeout("event"))
    assert run.task_state()["State"] == "running"

    run.wait_dead()
    assert_ran_once_and_reported(run)


@pytest.mark.exclusive
@pytest.mark.agent(persist=True)  # the client must keep its state through the restart
def test_task_keeps_running_through_an_agent_restart_and_reports_its_real_exit_code(
        jobs, agent, lab_host, lab_config):
    """Restart of the Nomad agent while a task runs: the container is the same one, still
    running; the restarted client recovers the task (not restarted) and reports its real
    exit code (7) when it ends."""
    # Long enough to outlive the agent's restart (~10 s under TCG) and the checks.
    run = sleeper_for(20 + 5 * lab_config.scale, jobs)
    run.wait_log("tick 1")
    before = running_containers(lab_host, agent)
    assert len(before) == 1, before
    alloc_id = run.alloc()["ID"]

    agent.restart()

    assert running_containers(lab_host, agent) == before, \
        "the container did not survive the restart"
    run.wait_log(f"tick {ticks(run) + 2}", timeout=lab_config.timeout("event"))
    assert run.alloc()["ID"] == alloc_id and run.task_state()["State"] == "running"

    run.wait_dead()
    assert_ran_once_and_reported(run)
