"""jobrun: summaries, waits over advancing allocation states, timeouts that name what was seen."""

from __future__ import annotations

import pytest
from fakes import FakeApi, alloc

from lab.core.errors import LabTimeout
from lab.nomad.api import ApiError
from lab.nomad.jobrun import JobRun, summarize_alloc

TIMEOUTS = {"job": 30.0, "event": 12.0}
HINT = "diagnostics: reports/diag/tests_e2e_test_smoke.py_test_hello"


def job(job_id="lab-abc123-hello", tasks=("app",)) -> dict:
    return {"Job": {"ID": job_id, "TaskGroups": [
        {"Name": "g", "Tasks": [{"Name": t} for t in tasks]}]}}


def run_of(api, **kwargs) -> JobRun:
    return JobRun(api, kwargs.pop("job", job()), TIMEOUTS.__getitem__, diag_hint=HINT)


def terminated(code, message=None):
    event = {"Type": "Terminated", "ExitCode": code}
    if message:
        event["DisplayMessage"] = message
    return event


# -- summarize_alloc -------------------------------------------------------------------------


def test_summarize_no_alloc():
    assert summarize_alloc(None) == "no allocation yet"
    assert summarize_alloc({}) == "no allocation yet"


def test_summarize_alloc_lists_each_task_with_its_last_three_events():
    a = alloc("failed", state="dead", failed=True, restarts=1, events=[
        "Received", "Task Setup", {"Type": "Started"},
        {"Type": "Driver Failure", "DriverError": "crun: exec: java: not found"},
        {"Type": "Not Restarting", "DisplayMessage": "Error was unrecoverable"}])
    a["TaskStates"]["sidecar"] = {"State": "pending", "Failed": False, "Restarts": 0,
                                  "Events": None}
    assert summarize_alloc(a) == (
        "alloc a1b2c3d4 client_status=failed; "
        "task app: dead failed=True restarts=1 events=['Started', "
        "'Driver Failure: crun: exec: java: not found', "
        "'Not Restarting: Error was unrecoverable']; "
        "task sidecar: pending failed=False restarts=0 events=[]")


def test_summarize_alloc_without_task_states():
    assert summarize_alloc({"ID": "deadbeef-1", "ClientStatus": "pending",
                            "TaskStates": None}) == "alloc deadbeef client_status=pending"


# -- reading state ---------------------------------------------------------------------------


def test_id_tasks_and_submit():
    api = FakeApi()
    run = run_of(api, job=job("lab-x-multi", tasks=("a", "b")))
    assert run.id == "lab-x-multi" and run.tasks == ["a", "b"]
    assert repr(run) == "JobRun(lab-x-multi)"
    assert run.submit() is run
    assert api.called("register") == [("lab-x-multi",)]
    assert run.register_result == {"EvalID": "eval-1"}


def test_alloc_is_the_newest_in_full():
    newest = alloc(events=["Received"], create_index=99)
    api = FakeApi(allocs=[newest])
    assert run_of(api).alloc() is newest
    assert api.called("allocation") == [(newest["ID"],)]


def test_reading_without_an_allocation():
    run = run_of(FakeApi())
    assert run.alloc() is None
    assert run.task_state() == {} and run.events() == [] and run.logs() == ""


def test_event_types_and_exit_codes_from_terminated_events():
    events = ["Received", "Started", terminated(1), "Restarting", "Started", terminated(0),
              {"Type": "Terminated"}]
    run = run_of(FakeApi(allocs=[alloc("complete", state="dead", events=events)]))
    assert run.event_types() == ["Received", "Started", "Terminated", "Restarting", "Started",
                                 "Terminated", "Terminated"]
    assert run.exit_codes() == [1, 0, 0]
    assert run.exit_codes("other-task") == []


def test_logs_of_the_newest_alloc_and_a_named_stream():
    api = FakeApi(allocs=[alloc()], logs=["boom\n"])
    assert run_of(api).logs(stream="stderr") == "boom\n"
    assert api.called("logs") == [(alloc()["ID"], "app", "stderr")]


def test_story_tells_the_events_and_the_tail_of_each_stream():
    events = ["Started", terminated(134)]
    api = FakeApi(allocs=[alloc("complete", state="dead", events=events)],
                  logs=["".join(f"line {i}\n" for i in range(30)),
                        "# A fatal error has been detected by the JRE\n"])
    assert run_of(api).story(tail=2) == (
        "Started\nTerminated\n"
        "-- last 2 lines of stdout:\nline 28\nline 29\n"
        "-- last 1 lines of stderr:\n# A fatal error has been detected by the JRE")
    assert [c[-1] for c in api.called("logs")] == ["stdout", "stderr"]


def test_story_says_what_it_could_not_read_instead_of_raising():
    api = FakeApi(allocs=[alloc("complete", state="dead", events=["Started"])],
                  logs=[ApiError("logs", "connection refused"), "last words\n"])
    told = run_of(api).story()
    assert told.startswith("Started\n-- stdout could not be read: ")
    assert "connection refused" in told
    assert told.endswith("-- last 1 lines of stderr:\nlast words")
    assert run_of(FakeApi(allocs=[ApiError("allocation", "timed out")])).story().startswith(
        "(the task's events could not be read: ")


# -- waiting ---------------------------------------------------------------------------------


def test_wait_dead_follows_the_states_and_returns_the_task_state(fast_waits):
    api = FakeApi(allocs=[
        None,
        alloc("pending", state="pending", events=["Received"]),
        ApiError("allocation", "connection reset"),  # transient: retried
        alloc("running", events=["Received", "Started"]),
        alloc("complete", state="dead", events=["Received", "Started", terminated(0)]),
    ])
    state = run_of(api).wait_dead()
    assert state["State"] == "dead" and state["Events"][-1]["ExitCode"] == 0
    assert api.alloc_script.calls == 5


def test_wait_running_and_terminal(fast_waits):
    api = FakeApi(allocs=[alloc("pending", state="pending"), alloc("running"),
                          alloc("failed", state="dead", failed=True)])
    run = run_of(api)
    assert run.wait_running()["State"] == "running"
    assert run.wait_alloc_terminal()["ClientStatus"] == "failed"


def test_wait_timeout_names_job_last_alloc_summary_and_diag_hint(fast_waits):
    stuck = alloc("pending", state="pending",
                  events=[{"Type": "Downloading Artifacts"},
                          {"Type": "Failed Artifact Download",
                           "DisplayMessage": "GET http://127.0.0.1:31000/hello.jar: 503"}])
    run = run_of(FakeApi(allocs=[stuck]))
    with pytest.raises(LabTimeout) as info:
        run.wait_dead()
    msg = str(info.value)
    assert msg.startswith("timed out after 30.0s waiting for job lab-abc123-hello: task app dead")
    assert "last seen: " + summarize_alloc(stuck) in msg
    assert "Failed Artifact Download: GET http://127.0.0.1:31000/hello.jar: 503" in msg
    assert msg.endswith("\n" + HINT)
    assert fast_waits.now == pytest.approx(1030.0), "the job timeout from the config"


def test_wait_without_any_allocation_says_so(fast_waits):
    with pytest.raises(LabTimeout, match="last seen: no allocation yet"):
        run_of(FakeApi()).wait_running(timeout=3)
    assert fast_waits.now == pytest.approx(1003.0)


def test_wait_event_counts_events_and_returns_the_nth(fast_waits):
    api = FakeApi(allocs=[
        alloc(events=["Started"]),
        alloc(events=["Started", terminated(1)]),
        alloc(events=["Started", terminated(1), "Restarting", "Started"]),
        alloc(events=["Started", terminated(1), "Restarting", "Started", terminated(0)]),
    ])
    event = run_of(api).wait_event("Terminated", count=2)
    assert event == terminated(0)
    assert api.alloc_script.calls == 4


def test_wait_event_uses_the_event_timeout_and_names_the_event(fast_waits):
    with pytest.raises(LabTimeout) as info:
        run_of(FakeApi(allocs=[alloc(events=["Started"])])).wait_event("Killed", task="app")
    assert "task app event 'Killed' x1" in str(info.value)
    assert fast_waits.now == pytest.approx(1012.0)


def test_wait_log_returns_the_whole_log_once_the_text_appears(fast_waits):
    api = FakeApi(allocs=[alloc()], logs=["", ApiError("logs", "task not started"),
                                          "Hel", "Hello, lab!\nbye\n"])
    assert run_of(api).wait_log("Hello, lab!") == "Hello, lab!\nbye\n"


def test_wait_log_timeout_shows_the_log_so_far(fast_waits):
    api = FakeApi(allocs=[alloc()], logs=["x" * 500 + "Exception in thread main"])
    with pytest.raises(LabTimeout) as info:
        run_of(api).wait_log("Hello", stream="stderr", timeout=4)
    msg = str(info.value)
    assert "job lab-abc123-hello: 'Hello' in app stderr" in msg
    assert "stderr so far: '" in msg and "Exception in thread main'" in msg
    assert "x" * 301 not in msg, "only the log's tail"
    assert msg.endswith(HINT)


def test_wait_evaluation_failed_placement(fast_waits):
    evals = [[], [{"Status": "pending", "StatusDescription": ""}],
             [{"Status": "complete", "FailedTGAllocs": {"g": {"NodesFiltered": 1}}}]]
    api = FakeApi(evaluations=evals)
    assert run_of(api).wait_evaluation_failed_placement()["FailedTGAllocs"]
    with pytest.raises(LabTimeout, match=r"last seen: \[\('complete', 'placed'\)\]"):
        run_of(FakeApi(evaluations=[[{"Status": "complete",
                                      "StatusDescription": "placed"}]])
               ).wait_evaluation_failed_placement(timeout=2)


# -- control ---------------------------------------------------------------------------------


def test_stop_deregisters_without_purge_by_default():
    api = FakeApi()
    run_of(api).stop()
    run_of(api).stop(purge=True)
    assert api.called("deregister") == [("lab-abc123-hello", False), ("lab-abc123-hello", True)]


def test_signal_goes_to_the_newest_alloc_and_first_task():
    api = FakeApi(allocs=[alloc()])
    run_of(api).signal("SIGTERM")
    assert api.called("signal") == [(alloc()["ID"], "SIGTERM", "app")]


def test_signal_without_an_allocation_is_an_error():
    with pytest.raises(LabTimeout, match="to have an allocation to signal"):
        run_of(FakeApi()).signal("SIGTERM")
