"""record: a test's record is built part by part from fakes (agent, fault journal, artifact
requests, allocations, leftover scan), keeps each part's own error instead of raising, and
reads as one timeline; leftovers are described in words with their paths; the agent's
teardown takes the task events before the drain and the bundle before the sweep."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from fakes import FakeApi, alloc

from lab.checks import leftovers, record, recording, teardown
from lab.faults import Journal
from lab.faults.artifacts import RequestRecord
from lab.remote.layout import CRUN_STATE_ROOT

ALLOC_ID = "5e6f7a8b-0000-0000-0000-000000000009"
CONTAINER = f"{ALLOC_ID}.app.1f2e3d4c"
T0 = 1_700_000_000.0  # the test's start (wall clock)


def ns(t: float) -> int:
    return int(t * 1e9)


def agent_ns(**kw):
    values = dict(id="nomad-lab-ab12-3", unit="nomad-lab-ab12-3.service",
                  ports={"http": 20001, "rpc": 20002, "serf": 20003}, node_id="node-1",
                  dir="/var/lib/nomad-lab/nomad-lab-ab12-3",
                  log_path="/var/lib/nomad-lab/nomad-lab-ab12-3/agent.log",
                  timeline={"unit_started": 0.2, "http_listening": 2.5}, started_at=10.0,
                  ready_at=21.0, startup_seconds=11.0)
    values.update(kw)
    return SimpleNamespace(**values)


def events_alloc():
    return {**alloc("failed", events=[
        {"Type": "Started", "Time": ns(T0 + 3), "DisplayMessage": "Task started by client"},
        {"Type": "Received", "Time": ns(T0 + 1), "DisplayMessage": ""},
        {"Type": "Driver Failure", "Time": ns(T0 + 5), "DriverError": "crun run failed"},
    ], alloc_id=ALLOC_ID), "JobID": "lab-ab12-t"}


# -- the parts -------------------------------------------------------------------------------
def test_task_events_are_one_timeline_oldest_first_with_their_message():
    events = record.task_events([events_alloc()])
    assert [(e["time"], e["type"], e["message"]) for e in events] == [
        (T0 + 1, "Received", ""), (T0 + 3, "Started", "Task started by client"),
        (T0 + 5, "Driver Failure", "crun run failed")]
    assert {(e["alloc"], e["task"], e["job"]) for e in events} == {("5e6f7a8b", "app",
                                                                    "lab-ab12-t")}


def test_allocations_are_fetched_in_full_through_the_api():
    api = FakeApi(allocs=[events_alloc()])
    api.job_allocations("prime")
    assert record.allocations(api) == [events_alloc()]
    assert [name for name, _ in api.calls[1:]] == ["allocations", "allocation"]


def test_only_this_tests_faults_and_requests_are_kept():
    journal = Journal()
    host = SimpleNamespace(name="lab")
    old = journal.open(host, "crun_broken", {})
    old.started_at = T0 - 10
    new = journal.open(host, "java_library_missing", {"path": "/usr/lib/jvm/x/libjli.so"})
    new.started_at, new.injected_at, new.healed_at = T0 + 1, T0 + 2, T0 + 9
    faults = record.fault_entries(journal.records(), since=T0)
    assert [f["name"] for f in faults] == ["java_library_missing"]
    assert faults[0]["injected_at"] == T0 + 2 and faults[0]["healed_at"] == T0 + 9
    assert faults[0]["details"] == {"path": "/usr/lib/jvm/x/libjli.so"} and not faults[0]["active"]

    served = [RequestRecord("hello.jar", "GET", None, T0 - 5),
              RequestRecord("hello.jar", "GET", "bytes=10-", T0 + 4, status=206,
                            bytes_sent=99, outcome="complete", finished_at=T0 + 4.5)]
    requests = record.request_entries(served, since=T0)
    assert requests == [{"name": "hello.jar", "method": "GET", "range": "bytes=10-",
                         "status": 206, "mode": None, "bytes_sent": 99, "outcome": "complete",
                         "started_at": T0 + 4, "finished_at": T0 + 4.5}]


def test_agent_info_of_a_ready_agent_and_of_one_that_failed_to_start():
    info = record.agent_info(agent_ns(), waited=0.5)
    assert info["id"] == "nomad-lab-ab12-3" and info["ports"]["http"] == 20001
    assert info["startup_s"] == 11.0 and info["waited_s"] == 0.5
    assert info["timeline"] == {"unit_started": 0.2, "http_listening": 2.5}
    failed = record.agent_info(agent_ns(ready_at=0.0, node_id=None))
    assert "startup_s" not in failed and failed["node_id"] is None


# -- the record ------------------------------------------------------------------------------
@pytest.mark.parametrize("outcomes, expected", [
    ({"setup": "passed", "call": "passed", "teardown": "passed"}, "passed"),
    ({"setup": "failed", "teardown": "passed"}, "error"),
    ({"setup": "passed", "call": "failed", "teardown": "failed"}, "failed"),
    ({"setup": "passed", "call": "passed", "teardown": "failed"}, "error"),
    ({"setup": "skipped", "teardown": "passed"}, "skipped"),
    ({}, "not run"),
])
def test_outcome_in_pytests_words(outcomes, expected):
    rec = record.Record("t")
    for when, outcome in outcomes.items():
        rec.add_report(when, outcome, 1.0)
    assert rec.outcome == expected
    assert rec.failed == ("failed" in outcomes.values())


def test_a_part_that_fails_keeps_its_error_and_the_record_goes_on():
    rec = record.Record("t")

    def unreachable():
        raise ConnectionError("tunnel closed")

    assert rec.part("task_events", unreachable, default=[]) == []
    assert rec.part("agent", lambda: {"id": "a"}) == {"id": "a"}
    assert rec.errors == {"task_events": "ConnectionError: tunnel closed"}
    assert json.loads(json.dumps(rec.to_dict()))["errors"] == rec.errors


def full_record() -> dict:
    rec = record.Record("tests/e2e/test_x.py::test_y", lab=True, started_at=T0)
    rec.agent = record.agent_info(agent_ns(), waited=0.0)
    rec.phases = [("agent ready", 0.0), ("job t running", 4.2), ("drained", 1.0)]
    rec.faults = [{"name": "crun_broken", "host": "lab", "details": {"mode": "exit"},
                   "started_at": T0 + 0.5, "injected_at": T0 + 2, "heal_started_at": T0 + 6,
                   "healed_at": T0 + 6.5, "error": None, "active": False}]
    rec.artifact_requests = [{"name": "hello.jar", "method": "GET", "range": None,
                              "status": 200, "mode": None, "bytes_sent": 1234,
                              "outcome": "complete", "started_at": T0 + 2.5,
                              "finished_at": T0 + 2.75}]
    rec.task_events = record.task_events([events_alloc()])
    rec.set_leftovers({"container": [CONTAINER]}, "nomad-lab-ab12-3")
    rec.add_report("setup", "passed", 0.1)
    rec.add_report("call", "failed", 9.0, "AssertionError: LAB-BODY-FAILURE")
    rec.add_report("teardown", "passed", 2.0)
    rec.errors["artifact_requests"] = "RuntimeError: server gone"
    return rec.to_dict()


def test_record_text_reads_as_one_timeline_with_leftovers_errors_and_the_failure():
    text = record.render_text(full_record())
    lines = text.splitlines()
    assert lines[0] == "test      tests/e2e/test_x.py::test_y"
    assert lines[1].startswith("outcome   failed in 11.1s (setup passed 0.1s, call failed 9.0s")
    assert "agent     nomad-lab-ab12-3 (unit nomad-lab-ab12-3.service, node node-1)" in text
    assert "http=20001 rpc=20002 serf=20003" in text
    assert "phases    agent ready 0.0s | job t running 4.2s | drained 1.0s" in text
    timeline = [ln for ln in lines if ln.lstrip().startswith("+")]
    assert [ln.split()[2] for ln in timeline] == ["event", "fault", "artifact", "event",
                                                  "event", "fault"]
    assert [ln.split()[0] for ln in timeline] == ["+1.000s", "+2.000s", "+2.500s", "+3.000s",
                                                  "+5.000s", "+6.500s"]
    assert "crun_broken injected on lab" in text and "crun_broken healed" in text
    assert "GET hello.jar -> 200 complete sent=1234 in 0.25s" in text
    assert "alloc 5e6f7a8b task app: Driver Failure: crun run failed" in text
    assert f"  - container {CONTAINER} of alloc 5e6f7a8b, task app still exists in " \
           f"{CRUN_STATE_ROOT}/nomad-lab-ab12-3/crun" in text
    assert "artifact_requests: RuntimeError: server gone" in text
    assert lines[-2:] == ["failure in call", "  AssertionError: LAB-BODY-FAILURE"]


def test_record_text_of_a_test_without_agent_or_scan():
    rec = record.Record("t", started_at=T0)
    rec.add_report("setup", "failed", 0.2, "RuntimeError: no lab host")
    text = record.render_text(rec.to_dict())
    assert "agent     none" in text and "artifacts not used" in text
    assert "  not scanned" in text and "(nothing happened" in text
    assert "failure in setup" in text


def test_write_puts_json_and_text_into_the_bundle(tmp_path):
    data = full_record()
    paths = record.write(data, tmp_path / "diag" / "t")
    assert [p.name for p in paths] == ["record.json", "record.txt"]
    assert json.loads(paths[0].read_text()) == data
    assert paths[1].read_text() == record.render_text(data)


# -- leftovers in words ----------------------------------------------------------------------
def test_every_kind_of_leftover_is_a_sentence_with_its_path():
    bundle = f"{CRUN_STATE_ROOT}/nomad-lab-zz-9/bundles/{CONTAINER}/config.json"
    found = {
        "unit": ["nomad-lab-ab12-3.service"],
        "data_dir": ["nomad-lab-ab12-3"],
        "container": [CONTAINER],
        "bundle": [bundle],
        "shim": ["4242 /opt/lab/plugins/nomad-driver-java-crun /run/java-crun/x/bundles/y"],
        "java_process": ["4250 java -jar /local/hello.jar"],
        "cgroup": [f"/sys/fs/cgroup/nomad.slice/share.slice/{ALLOC_ID}.app.scope",
                   f"/sys/fs/cgroup/java-crun/{CONTAINER}"],
        "mount": ["/var/lib/nomad-lab/nomad-lab-ab12-3/data/alloc/x/app/secrets"],
        "netns": [ALLOC_ID],
        "fault": ["iptables -A INPUT ... lab-fault"],
        "novel": ["thing"],
    }
    assert leftovers.describe(found, "nomad-lab-ab12-3") == [
        "agent unit nomad-lab-ab12-3.service is still loaded "
        "(systemctl status nomad-lab-ab12-3.service)",
        "agent data dir /var/lib/nomad-lab/nomad-lab-ab12-3 remains",
        # the bundle names the container's real state root, whichever agent's it is
        f"container {CONTAINER} of alloc 5e6f7a8b, task app still exists in "
        f"{CRUN_STATE_ROOT}/nomad-lab-zz-9/crun "
        f"(crun --root {CRUN_STATE_ROOT}/nomad-lab-zz-9/crun state {CONTAINER})",
        f"bundle of container {CONTAINER} remains: {bundle}",
        "shim process 4242 still runs: /opt/lab/plugins/nomad-driver-java-crun "
        "/run/java-crun/x/bundles/y",
        "java process 4250 still runs: java -jar /local/hello.jar",
        f"cgroup /sys/fs/cgroup/nomad.slice/share.slice/{ALLOC_ID}.app.scope of alloc "
        "5e6f7a8b, task app remains",
        f"cgroup /sys/fs/cgroup/java-crun/{CONTAINER} of alloc 5e6f7a8b, task app remains",
        "/var/lib/nomad-lab/nomad-lab-ab12-3/data/alloc/x/app/secrets is still mounted "
        "(findmnt /var/lib/nomad-lab/nomad-lab-ab12-3/data/alloc/x/app/secrets)",
        f"network namespace {ALLOC_ID} (a group network of allocation 5e6f7a8b) remains: "
        f"ip netns pids {ALLOC_ID}; ip netns delete {ALLOC_ID}",
        "a fault is not healed: iptables -A INPUT ... lab-fault",
        "novel: thing",
    ]


def test_a_container_without_bundle_or_agent_names_where_crun_keeps_them():
    (line,) = leftovers.describe({"container": ["odd-name"]})
    assert line == f"container odd-name still exists in one of {CRUN_STATE_ROOT}/*/crun"
    (line,) = leftovers.describe({"container": ["odd-name"]}, "nomad-lab-ab12-3")
    assert f"in {CRUN_STATE_ROOT}/nomad-lab-ab12-3/crun " in line


# -- recording steps -------------------------------------------------------------------------
def test_the_bundle_is_collected_once_and_only_for_a_lab_test(monkeypatch, tmp_path):
    collected = []
    monkeypatch.setattr(recording.diag, "collect", lambda host, agent, out: collected.append(
        (host, agent, out)))
    rec = record.Record("t", lab=True)
    assert recording.bundle(rec, tmp_path / "b", "host", "agent") == tmp_path / "b"
    recording.bundle(rec, tmp_path / "b", "host", None)  # teardown: already there
    assert collected == [("host", "agent", tmp_path / "b")]
    assert rec.bundle == str(tmp_path / "b") and rec.phases[0][0] == "diagnostics collected"

    plain = record.Record("t", lab=False)
    recording.bundle(plain, tmp_path / "c", "host")
    no_host = record.Record("t", lab=True)
    recording.bundle(no_host, tmp_path / "d", None)
    assert len(collected) == 1 and plain.bundle and no_host.bundle


def test_a_bundle_starts_empty_but_keeps_what_this_test_put_there(monkeypatch, tmp_path):
    monkeypatch.setattr(recording.diag, "collect", lambda host, agent, out: (
        out.mkdir(parents=True), (out / "agent.log").write_text("now")))
    out = tmp_path / "b"
    out.mkdir()
    (out / "task-0ld1d0ld-app.stdout").write_text("an earlier run's")
    rec = record.Record("t", lab=True)
    recording.bundle(rec, out, "host")
    rec.add_report("teardown", "failed", 1.0, "left")
    recording.finish(rec, out)
    assert sorted(p.name for p in out.iterdir()) == ["agent.log", "record.json", "record.txt"]
    plain = record.Record("t")  # a test without the lab: its record only
    plain.add_report("call", "failed", 1.0, "boom")
    recording.finish(plain, out)
    assert sorted(p.name for p in out.iterdir()) == ["record.json", "record.txt"]


def test_the_kernel_gates_traces_land_in_the_bundle_collected_after_it_failed(monkeypatch,
                                                                              tmp_path):
    """The gate fails a test in its last teardown, before the bundle exists; the bundle is
    then made fresh, so kernel.txt must come from the record, not from the gate's own write
    (it was wiped that way in the gate's first live run)."""
    monkeypatch.setattr(recording.diag, "collect", lambda host, agent, out: (
        out.mkdir(parents=True), (out / "agent.log").write_text("now")))
    out = tmp_path / "b"
    rec = record.Record("t", lab=True)
    rec.kernel = ["kernel hung task at 12.0s after boot: INFO: task dd:42 blocked"]
    rec.kernel_traces = "INFO: task dd:42 blocked for more than 5 seconds.\n    __schedule\n"
    rec.add_report("teardown", "failed", 1.0, "the lab host's kernel reported 1 problem(s)")
    recording.bundle(rec, out, "host")
    recording.finish(rec, out)
    assert (out / "kernel.txt").read_text() == rec.kernel_traces
    assert sorted(p.name for p in out.iterdir()) == ["agent.log", "kernel.txt", "record.json",
                                                    "record.txt"]


def test_a_bundle_that_cannot_be_collected_is_an_error_in_the_record(monkeypatch, tmp_path):
    def broken(host, agent, out):
        raise OSError("disk full")

    monkeypatch.setattr(recording.diag, "collect", broken)
    rec = record.Record("t", lab=True)
    recording.bundle(rec, tmp_path / "b", "host")
    assert rec.errors == {"bundle": "could not collect diagnostics: OSError: disk full"}


def test_finish_writes_the_record_only_for_a_failed_test(monkeypatch, tmp_path):
    from lab import faults

    journal = Journal()
    monkeypatch.setattr(faults, "JOURNAL", journal)
    rec = record.Record("t", lab=True, started_at=T0)
    fault = journal.open(SimpleNamespace(name="lab"), "network_down", {})
    fault.started_at = T0 + 1
    server = SimpleNamespace(requests=lambda: [RequestRecord("a.jar", "GET", None, T0 + 2)])
    rec.add_report("call", "passed", 1.0)
    assert recording.finish(rec, tmp_path / "b", server) == []
    assert not (tmp_path / "b").exists()
    assert [f["name"] for f in rec.faults] == ["network_down"]
    assert [r["name"] for r in rec.artifact_requests] == ["a.jar"]

    rec.add_report("teardown", "failed", 1.0, "left on the lab host")
    ((title, text),) = recording.finish(rec, tmp_path / "b", None)
    assert title == "lab diagnostics" and f"record: {tmp_path / 'b' / 'record.txt'}" in text
    assert json.loads((tmp_path / "b" / "record.json").read_text())["outcome"] == "error"


def test_environment_keeps_a_broken_config_as_a_fact():
    def broken():
        raise ValueError("target 'x' is not understood")

    env = recording.environment(broken, "gw1", {"kernel": "6.1"})
    assert env == {"run_id": None, "worker": "gw1", "config_error":
                   "target 'x' is not understood", "kernel": "6.1"}


# -- the agent's teardown --------------------------------------------------------------------
class FakeAgent:
    def __init__(self, steps: list, drain_problems=()):
        self.id, self.steps, self.drain_problems = "nomad-lab-ab12-3", steps, list(drain_problems)
        self.api = FakeApi(allocs=[events_alloc()])
        self.api.job_allocations("prime")
        self.api.seen_alloc_ids = {ALLOC_ID}
        real_allocations = self.api.allocations
        self.api.allocations = lambda: steps.append("events") or real_allocations()

    def drain(self):
        self.steps.append("drain")
        return list(self.drain_problems)

    def stop(self, check, graceful):
        self.steps.append(f"stop graceful={graceful}")


class FakePool:
    def __init__(self, steps):
        self.steps = steps

    def live_ids(self):
        return ["nomad-lab-ab12-4"]

    def drop_ahead(self):
        self.steps.append("drop_ahead")


def test_teardown_takes_events_before_the_drain_and_the_bundle_before_the_sweep(
        monkeypatch):
    steps: list = []
    scans = []
    monkeypatch.setattr(teardown.janitor, "scan", lambda host, include_faults, exclude_agents:
                        scans.append(exclude_agents) or steps.append("scan")
                        or {"container": [CONTAINER]})
    monkeypatch.setattr(teardown.janitor, "sweep", lambda host: steps.append("sweep"))
    rec = record.Record("t", lab=True)
    problems = teardown.agent_teardown(
        FakeAgent(steps), "host", FakePool(steps), rec,
        lambda agent: steps.append(f"bundle agent={agent is not None}"), own_traces_only=False)
    assert steps == ["events", "drain", "stop graceful=False", "scan", "bundle agent=False",
                     "drop_ahead", "sweep"]
    assert scans == [["nomad-lab-ab12-4"]]
    assert [e["type"] for e in rec.task_events] == ["Received", "Started", "Driver Failure"]
    assert [name for name, _ in rec.phases] == ["drained", "stopped", "scanned"]
    assert rec.leftovers["found"] == {"container": [CONTAINER]}
    assert problems == ["left on the lab host after the test:\n  - container "
                        f"{CONTAINER} of alloc 5e6f7a8b, task app still exists in "
                        f"{CRUN_STATE_ROOT}/nomad-lab-ab12-3/crun (crun --root "
                        f"{CRUN_STATE_ROOT}/nomad-lab-ab12-3/crun state {CONTAINER})"]


def test_a_failed_drain_bundles_while_the_agent_is_up_and_stops_it_gracefully(monkeypatch):
    steps: list = []
    monkeypatch.setattr(teardown.janitor, "scan_agent",
                        lambda host, agent_id, allocs, include_faults: steps.append("scan_agent")
                        or {})
    rec = record.Record("t", lab=True)
    agent = FakeAgent(steps, drain_problems=["draining agent x failed: timed out"])
    agent.api.allocations = lambda: (_ for _ in ()).throw(ConnectionError("tunnel closed"))
    problems = teardown.agent_teardown(
        agent, "host", FakePool(steps), rec,
        lambda agent: steps.append(f"bundle agent={agent is not None}"), own_traces_only=True)
    assert steps == ["drain", "bundle agent=True", "stop graceful=True", "scan_agent"]
    assert problems == ["draining agent x failed: timed out"]
    assert rec.task_events is None and rec.errors == {
        "task_events": "ConnectionError: tunnel closed"}
    assert rec.leftovers == {"found": {}, "described": []}


@pytest.mark.parametrize("unjournaled, injected_at, scanned", [
    (False, None, False),  # nothing journaled since the last fault scan, no inner run
    (False, 150.0, True),  # by this test
    (False, 50.0, True),  # by a test without an agent, after the last fault scan (at 10)
    (False, 5.0, False),  # before the last fault scan: that one covered it
    (True, None, True),  # an inner run may have injected (and left) one
])
def test_the_fault_scan_runs_where_a_fault_trace_is_possible(monkeypatch, unjournaled,
                                                             injected_at, scanned):
    from lab import faults

    seen = []
    monkeypatch.setattr(teardown.janitor, "scan", lambda host, include_faults, exclude_agents:
                        seen.append(include_faults) or {})
    journal = []
    if injected_at is not None:
        journal.append(faults.framework.FaultRecord("netem", "vm", "ab12", {},
                                                     started_at=injected_at))
    monkeypatch.setattr(faults.JOURNAL, "records", lambda: journal)
    rec = record.Record("t", lab=True, started_at=100.0)
    steps: list = []
    teardown.agent_teardown(FakeAgent(steps), "host", FakePool(steps), rec, lambda agent: None,
                            own_traces_only=False, unjournaled_faults=unjournaled,
                            faults_since=10.0)
    assert seen == [scanned]


# -- the agent's set-up ----------------------------------------------------------------------
class TakePool:
    def __init__(self, answer):
        self.answer = answer

    def take(self, key, options):
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer, 0.25


def test_an_agent_taken_from_the_pool_is_recorded_with_its_wait():
    rec = record.Record("t", lab=True)
    made = {"t": "the agent"}
    agent = agent_ns()
    assert recording.take_agent(TakePool(agent), "t", None, rec, made) == (agent, 0.25)
    assert rec.agent["id"] == "nomad-lab-ab12-3" and rec.agent["waited_s"] == 0.25
    assert rec.phases == [("agent ready", 0.25)] and made == {}


def test_an_agent_that_fails_to_start_is_recorded_from_what_the_pool_made():
    rec = record.Record("t", lab=True)
    failed = agent_ns(ready_at=0.0, node_id=None, timeline={"unit_started": 0.3})
    made = {"t": failed, "other": agent_ns()}
    with pytest.raises(RuntimeError, match="not running"):
        recording.take_agent(TakePool(RuntimeError("agent not running")), "t", None, rec, made)
    assert rec.agent["id"] == "nomad-lab-ab12-3" and rec.agent["timeline"] == {
        "unit_started": 0.3}
    assert "startup_s" not in rec.agent and [n for n, _ in rec.phases] == ["agent failed"]
    assert list(made) == ["other"]
