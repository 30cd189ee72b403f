"""api: LabApi's calls reach the right Nomad endpoints (a fake Nomad on 127.0.0.1) and its
errors name the call and Nomad's answer."""

from __future__ import annotations

import pytest
from fakes import FakeNomadServer, Text

from lab.core.errors import LabError
from lab.nomad.api import TRANSIENT, ApiError, LabApi
from lab.remote.host import free_local_port

ALLOC = "0f6c2a51-1111-2222-3333-444455556666"


@pytest.fixture
def nomad():
    with FakeNomadServer() as server:
        yield server


@pytest.fixture
def api(nomad, no_lab_env):
    return LabApi("127.0.0.1", nomad.port, timeout=5)


def only_request(nomad):
    (request,) = nomad.requests
    return request


@pytest.mark.parametrize("call, method, path, answer, expected", [
    (lambda a: a.leader(), "GET", "/v1/status/leader", "127.0.0.1:4647", "127.0.0.1:4647"),
    (lambda a: a.nodes(), "GET", "/v1/nodes", [{"ID": "n1"}], [{"ID": "n1"}]),
    (lambda a: a.node("n1"), "GET", "/v1/node/n1", {"ID": "n1"}, {"ID": "n1"}),
    (lambda a: a.jobs(), "GET", "/v1/jobs", [{"ID": "j"}], [{"ID": "j"}]),
    (lambda a: a.job("j1"), "GET", "/v1/job/j1", {"ID": "j1"}, {"ID": "j1"}),
    (lambda a: a.job_allocations("j1"), "GET", "/v1/job/j1/allocations", [{"ID": "a"}],
     [{"ID": "a"}]),
    (lambda a: a.job_evaluations("j1"), "GET", "/v1/job/j1/evaluations", [], []),
    (lambda a: a.job_summary("j1"), "GET", "/v1/job/j1/summary", {"JobID": "j1"},
     {"JobID": "j1"}),
    (lambda a: a.allocation(ALLOC), "GET", f"/v1/allocation/{ALLOC}", {"ID": ALLOC},
     {"ID": ALLOC}),
    (lambda a: a.allocations(), "GET", "/v1/allocations", [], []),
    (lambda a: a.alloc_stats(ALLOC), "GET", f"/v1/client/allocation/{ALLOC}/stats",
     {"ResourceUsage": {}}, {"ResourceUsage": {}}),
    (lambda a: a.stop_allocation(ALLOC), "POST", f"/v1/allocation/{ALLOC}/stop",
     {"EvalID": "e"}, None),
    (lambda a: a.system_gc(), "PUT", "/v1/system/gc", {}, None),
    (lambda a: a.client_gc(), "GET", "/v1/client/gc", {}, None),
])
def test_calls_reach_their_endpoint(nomad, api, call, method, path, answer, expected):
    nomad.route(method, path, (200, answer))
    assert call(api) == expected
    assert only_request(nomad).method == method and only_request(nomad).path == path


def test_node_by_name_picks_the_named_node(nomad, api):
    nomad.route("GET", "/v1/nodes", (200, [{"ID": "n1", "Name": "other"},
                                           {"ID": "n2", "Name": "nomad-lab-x-1"}]))
    assert api.node_by_name("nomad-lab-x-1")["ID"] == "n2"
    assert api.node_by_name("missing") is None


def test_driver_info_is_empty_when_the_driver_or_drivers_are_missing(nomad, api):
    nomad.route("GET", "/v1/node/n1",
                (200, {"Drivers": {"java-crun": {"Healthy": True}}}),
                (200, {"Drivers": None}), (200, {"Drivers": {"java-crun": None}}))
    assert api.driver_info("n1", "java-crun") == {"Healthy": True}
    assert api.driver_info("n1", "java-crun") == {}
    assert api.driver_info("n1", "java-crun") == {}


def test_register_posts_the_job(nomad, api):
    job = {"Job": {"ID": "lab-abc-hello", "Type": "batch"}}
    nomad.route("POST", "/v1/jobs", (200, {"EvalID": "e1"}))
    assert api.register(job) == {"EvalID": "e1"}
    assert only_request(nomad).body == job


def test_deregister_purges_by_default(nomad, api):
    nomad.route("DELETE", "/v1/job/j1", (200, {"EvalID": "e"}))
    api.deregister("j1")
    api.deregister("j1", purge=False)
    assert [r.query.get("purge") for r in nomad.requests] == [["True"], ["False"]]


def test_logs_ask_for_plain_text_of_one_stream(nomad, api):
    nomad.route("GET", f"/v1/client/fs/logs/{ALLOC}", (200, Text("hello from java\n")))
    assert api.logs(ALLOC, "app", "stderr") == "hello from java\n"
    query = only_request(nomad).query
    assert query["task"] == ["app"] and query["type"] == ["stderr"]
    assert query["plain"] == ["true"] and query["origin"] == ["start"]


def test_logs_are_decoded_as_utf8_although_nomad_sends_no_charset(nomad, api):
    nomad.route("GET", f"/v1/client/fs/logs/{ALLOC}", (200, Text("arg[3]=ünïcødé\n")))
    assert api.logs(ALLOC, "app") == "arg[3]=ünïcødé\n"


def test_read_alloc_file_reads_one_path_of_the_allocation_directory(nomad, api):
    nomad.route("GET", f"/v1/client/fs/cat/{ALLOC}", (200, Text("# A fatal error\n")))
    assert api.read_alloc_file(ALLOC, "app/local/hs_err_pid2.log") == "# A fatal error\n"
    assert only_request(nomad).query["path"] == ["app/local/hs_err_pid2.log"]


def test_signal_names_the_signal_and_task(nomad, api):
    nomad.route("POST", f"/v1/client/allocation/{ALLOC}/signal", (200, {}))
    api.signal(ALLOC, "SIGUSR1", "app")
    assert only_request(nomad).body == {"Signal": "SIGUSR1", "Task": "app"}


def test_job_returns_none_for_an_unknown_job_and_raises_otherwise(nomad, api):
    nomad.route("GET", "/v1/job/gone", (404, Text("job not found")))
    nomad.route("GET", "/v1/job/broken", (500, Text("rpc error: No cluster leader")))
    assert api.job("gone") is None
    with pytest.raises(ApiError) as info:
        api.job("broken")
    assert info.value.status == 500


def test_api_error_names_the_call_and_nomads_answer(nomad, api):
    nomad.route("POST", "/v1/jobs", (400, Text("1 error occurred:\n\t* Task group missing\n")))
    with pytest.raises(ApiError) as info:
        api.register({"Job": {"ID": "lab-abc-bad"}})
    exc = info.value
    assert str(exc) == ("Nomad API register job lab-abc-bad failed: 1 error occurred:\n"
                        "\t* Task group missing")
    assert exc.status == 400 and exc.call == "register job lab-abc-bad"
    assert isinstance(exc, LabError) and isinstance(exc, TRANSIENT)


def test_a_refused_connection_is_an_api_error_a_poller_may_retry():
    api = LabApi("127.0.0.1", free_local_port(), timeout=2)
    with pytest.raises(TRANSIENT) as info:
        api.leader()
    assert isinstance(info.value, ApiError)
    assert info.value.status is None
    assert "status/leader" in str(info.value)


def test_the_developers_nomad_environment_is_ignored(nomad, monkeypatch):
    """NOMAD_ADDR & co. point at someone's real cluster: the lab must talk to its own agent."""
    monkeypatch.setenv("NOMAD_ADDR", f"http://127.0.0.1:{free_local_port()}")
    monkeypatch.setenv("NOMAD_REGION", "eu-west")
    monkeypatch.setenv("NOMAD_NAMESPACE", "team-a")
    nomad.route("GET", "/v1/jobs", (200, []))
    api = LabApi("127.0.0.1", nomad.port)
    assert api.jobs() == []
    query = only_request(nomad).query
    assert query.get("region", ["global"]) == ["global"]
    assert query.get("namespace", ["default"]) == ["default"]
    assert api.address == f"http://127.0.0.1:{nomad.port}"
