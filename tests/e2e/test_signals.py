"""Story 4, signal handling: stop signals reach the JVM inside the container, graceful
shutdowns are waited for, stubborn apps are force-killed after kill_timeout, signals sent
through the allocation API are delivered, and the task's states and events follow Nomad's
order while this happens.
"""

from __future__ import annotations

import pytest

from lab.checks import probes
from lab.core.wait import until
from lab.nomad import events
from lab.nomad.api import TRANSIENT, ApiError

GRACEFUL_TIMEOUT_S = 10  # kill_timeout for apps that do shut down: far above what they need
STUBBORN_TIMEOUT_S = 3  # kill_timeout for the app that ignores SIGTERM


def event_time(run, event_type: str) -> float:
    """Seconds (epoch) of the task's first event of `event_type`."""
    return events.seconds(events.first(run.events(), event_type))


def terminated(run) -> dict:
    found = events.of_type(run.events(), "Terminated")
    assert len(found) == 1, events.describe(run.events())
    return found[0]


def alloc_data_file(agent, run, name: str, lab_host) -> str:
    """A file of the shared alloc dir's data/ (/alloc/data in the container), read on the
    lab host."""
    return lab_host.read_file(f"{probes.alloc_dir(agent, run.alloc()['ID'])}/alloc/data/{name}")


def test_stop_sends_sigterm_and_waits_for_the_shutdown_hook_within_kill_timeout(
        jobs, agent, lab_host, request):
    """Stopping a job delivers SIGTERM into the container: the JVM's shutdown hook, which
    needs a full second, runs to its end (its log line and its marker in /alloc/data), the task
    exits 143 (SIGTERM, not a force kill) after at least that second and within kill_timeout."""
    run = jobs.run("sleeper", env={"SHUTDOWN_DELAY_MS": "1000"},
                   kill_timeout_s=GRACEFUL_TIMEOUT_S)
    run.wait_log("sleeper started")

    run.stop()
    run.wait_dead()

    assert run.exit_codes() == [143], run.event_types()
    log = run.logs()
    assert "shutdown hook started delay_ms=1000" in log
    assert "shutdown hook ran marker=/alloc/data/shutdown-app" in log
    assert alloc_data_file(agent, run, "shutdown-app", lab_host) == \
        "shutdown hook ran after 1000 ms\n"
    took = event_time(run, "Terminated") - event_time(run, "Killing")
    request.node.user_properties.append(("killing_to_terminated_s", round(took, 2)))
    assert 1.0 <= took < GRACEFUL_TIMEOUT_S, f"Killing -> Terminated took {took:.2f}s"


def test_app_ignoring_sigterm_is_force_killed_after_kill_timeout(jobs, request):
    """An app that ignores SIGTERM gets it (it says so), then is SIGKILLed once kill_timeout
    has elapsed: not before, and not much after. Exit 137 with signal 9."""
    run = jobs.run("ignoreterm", kill_timeout_s=STUBBORN_TIMEOUT_S)
    run.wait_log("ignoreterm ready")

    run.stop()
    run.wait_dead()

    assert "ignoring SIGTERM" in run.logs()
    end = terminated(run)
    assert (end["ExitCode"], end["Signal"]) == (137, 9), end
    took = event_time(run, "Terminated") - event_time(run, "Killing")
    request.node.user_properties.append(("killing_to_terminated_s", round(took, 2)))
    # The upper bound leaves room for crun kill and Nomad's bookkeeping under TCG.
    assert STUBBORN_TIMEOUT_S <= took < STUBBORN_TIMEOUT_S + 5, \
        f"Killing -> Terminated took {took:.2f}s with kill_timeout={STUBBORN_TIMEOUT_S}s"


def test_kill_signal_sigint_is_what_the_app_receives_on_stop(jobs):
    """kill_signal = "SIGINT" is honoured: the app reports SIGINT (not SIGTERM) and exits
    with its SIGINT code, 130."""
    run = jobs.run("signals", kill_signal="SIGINT", kill_timeout_s=GRACEFUL_TIMEOUT_S)
    ready = run.wait_log("signals ready")
    assert "SIGINT" in ready.split("handled=")[1], ready  # not ignored since start

    run.stop()
    run.wait_dead()

    log = run.logs()
    assert "signal: SIGINT" in log and "exiting with 130 after SIGINT" in log, log
    assert run.exit_codes() == [130], run.event_types()


def test_alloc_signal_api_delivers_sighup_and_sigusr2_and_rejects_an_unknown_name(jobs):
    """Signals sent through the allocation signal API reach the containerized JVM (SIGHUP,
    SIGUSR2 reported by the app, a Signaling event each); an unknown signal name is rejected
    with an error that says so, and the task keeps running."""
    run = jobs.run("signals", kill_timeout_s=GRACEFUL_TIMEOUT_S)
    ready = run.wait_log("signals ready")
    assert "SIGHUP" in ready and "SIGUSR2" in ready, ready

    with pytest.raises(ApiError) as rejected:
        run.signal("SIGNOPE")
    assert "unknown signal" in rejected.value.text.lower(), rejected.value.text
    assert "SIGNOPE" in rejected.value.text, rejected.value.text

    for signal in ("SIGHUP", "SIGUSR2"):
        run.signal(signal)
        run.wait_log(f"signal: {signal}")
    run.wait_event("Signaling", count=2)
    assert run.task_state()["State"] == "running"
    assert "Terminated" not in run.event_types()

    run.stop()
    run.wait_dead()
    assert run.exit_codes() == [143], run.event_types()  # the default kill signal: SIGTERM


def test_stop_walks_states_pending_running_dead_with_events_in_order(jobs, artifacts,
                                                                     lab_config):
    """Task state transitions during signal handling: pending -> running -> dead, observed by
    polling, with the events Received, Task Setup, Started, Killing, Terminated, Killed in
    that order. The JAR's download is held for a few seconds so that pending is observable."""
    held = "sleeper-held.jar"
    artifacts.add(held, artifacts.artifact("sleeper.jar").path)
    artifacts.stall(held, seconds=2 + lab_config.scale, times=1)
    run = jobs.run(held, kill_timeout_s=GRACEFUL_TIMEOUT_S)

    states: list[str] = []
    stopped = []

    def stopped_and_dead():
        state = run.task_state().get("State")
        if state and (not states or states[-1] != state):
            states.append(state)
        if state == "running" and not stopped:
            run.stop()
            stopped.append(True)
        return state == "dead"

    until(stopped_and_dead, lab_config.timeout("job"), f"job {run.id}: pending, running, dead",
          interval=0.2, max_interval=0.5, retry_on=TRANSIENT)

    assert states == ["pending", "running", "dead"]
    order = ["Received", "Task Setup", "Started", "Killing", "Terminated", "Killed"]
    assert [t for t in run.event_types() if t in order] == order, run.event_types()
    assert run.exit_codes() == [143]
