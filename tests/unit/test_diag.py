"""diag: the failure bundle is written part by part even when some parts fail; summary() reads
it back. Also facts (the environment recorded with every report)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from fakes import FakeApi, alloc, bash_syntax_errors

from lab.checks import diag, facts
from lab.checks.janitor import CRUN_ROOTS
from lab.core.errors import CommandFailed
from lab.nomad.api import ApiError

AGENT_LOG = """==> Nomad agent started!
    2025-01-01T00:00:00Z [INFO]  agent: plugin loaded: plugin=nomad-driver-java-crun
    2025-01-01T00:00:01Z [WARN]  client.driver_mgr.java-crun: slow fingerprint: took=2s
    2025-01-01T00:00:02Z [INFO]  client: node registration complete
    2025-01-01T00:00:03Z [ERROR] client.driver_mgr.java-crun: crun run failed: exit 1
"""
ALLOC = alloc("failed", state="dead", failed=True, events=["Started", "Driver Failure"],
              alloc_id="5e6f7a8b-0000-0000-0000-000000000009")


def fake_agent(api=None):
    return SimpleNamespace(id="nomad-lab-abc123-1", api=api,
                           log_path="/var/lib/nomad-lab/nomad-lab-abc123-1/agent.log")


def api_with_alloc():
    api = FakeApi(allocs=[ALLOC], logs=["hello\n"])
    api.job_allocations("prime")  # make ALLOC the current allocation
    return api


@pytest.fixture
def diag_host(host):
    host.on("cat /var/lib/nomad-lab/nomad-lab-abc123-1/agent.log", AGENT_LOG)
    host.on(f"for r in {CRUN_ROOTS}", "NAME PID STATUS\n3f2a.app 4242 running\n")
    host.on("dmesg", "[  1.0] oom-kill: java\n")
    host.on("nomad.slice", "== /sys/fs/cgroup/nomad.slice/x.scope\n")
    host.on("list-units", "container 3f2a.app\n")
    return host


def read(out, name):
    return (out / name).read_text()


# -- bundle_dir ------------------------------------------------------------------------------


@pytest.mark.parametrize("test_id, name", [
    ("tests/e2e/test_smoke.py::test_hello", "tests_e2e_test_smoke.py_test_hello"),
    ("tests/e2e/test_x.py::test_sig[SIGTERM-143]", "tests_e2e_test_x.py_test_sig_SIGTERM-143"),
    ("::weird id with spaces/..", "weird_id_with_spaces_.."),
    ("a" * 400, "a" * 150),
])
def test_bundle_dir_sanitises_test_ids(tmp_path, test_id, name):
    path = diag.bundle_dir(tmp_path, test_id)
    assert path == tmp_path / "diag" / name
    assert path.parent == tmp_path / "diag", "never escapes reports/diag"


# -- collect ---------------------------------------------------------------------------------


def test_collect_writes_every_part(diag_host, tmp_path):
    out = tmp_path / "bundle"
    written = diag.collect(diag_host, fake_agent(api_with_alloc()), out)
    task_logs = ["task-5e6f7a8b-app.stdout", "task-5e6f7a8b-app.stderr"]
    assert written == ["agent.log", "plugin.log", "allocations.json", *task_logs, "crun.txt",
                       "cgroups.txt", "dmesg.txt", "leftovers.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted(written)
    assert read(out, "agent.log") == AGENT_LOG
    plugin = read(out, "plugin.log").splitlines()
    assert len(plugin) == 3 and all("java-crun" in line for line in plugin)
    assert json.loads(read(out, "allocations.json")) == [ALLOC]
    assert read(out, "task-5e6f7a8b-app.stdout") == "hello\n"
    assert "3f2a.app 4242 running" in read(out, "crun.txt")
    assert "oom-kill" in read(out, "dmesg.txt")
    assert json.loads(read(out, "leftovers.json")) == {"container": ["3f2a.app"]}


def test_collect_without_an_agent_still_collects_the_host_parts(diag_host, tmp_path):
    written = diag.collect(diag_host, None, tmp_path / "b")
    assert written == ["crun.txt", "cgroups.txt", "dmesg.txt", "leftovers.json"]


def test_a_failing_part_is_recorded_and_the_others_are_still_written(diag_host, tmp_path):
    api = api_with_alloc()
    api.log_script.answers = [ApiError("logs", "task not started")]
    diag_host.on(f"for r in {CRUN_ROOTS}", CommandFailed("vm", "crun list", None,
                                                               "SSH failed: reset"))
    out = tmp_path / "b"
    written = diag.collect(diag_host, fake_agent(api), out)
    assert "could not collect crun.txt: CommandFailed:" in read(out, "crun.txt")
    assert "SSH failed: reset" in read(out, "crun.txt")
    assert read(out, "task-5e6f7a8b-app.stdout").startswith(
        "could not collect task-5e6f7a8b-app.stdout: ApiError: Nomad API logs failed")
    assert {"dmesg.txt", "leftovers.json", "agent.log"} <= set(written)
    assert "oom-kill" in read(out, "dmesg.txt")


def test_an_unreachable_api_does_not_lose_the_rest_of_the_bundle(diag_host, tmp_path):
    """The agent died: its API is gone, which is exactly when the bundle matters most."""
    api = FakeApi()
    api.allocations = lambda: (_ for _ in ()).throw(ApiError("allocations", "refused"))
    out = tmp_path / "b"
    written = diag.collect(diag_host, fake_agent(api), out)
    assert "could not collect allocations.json: ApiError" in read(out, "allocations.json")
    assert {"agent.log", "plugin.log", "crun.txt", "dmesg.txt", "leftovers.json"} <= set(written)
    assert read(out, "agent.log") == AGENT_LOG


def test_an_unreadable_agent_log_does_not_lose_the_rest_of_the_bundle(diag_host, tmp_path):
    diag_host.on("cat /var/lib/nomad-lab", CommandFailed("vm", "cat", None, "SSH failed: EOF"))
    out = tmp_path / "b"
    written = diag.collect(diag_host, fake_agent(api_with_alloc()), out)
    assert "could not collect agent.log: CommandFailed" in read(out, "agent.log")
    assert {"allocations.json", "crun.txt", "dmesg.txt"} <= set(written)


# -- summary ---------------------------------------------------------------------------------


def test_summary_lists_allocations_and_the_plugins_warnings_and_errors(diag_host, tmp_path):
    out = tmp_path / "b"
    diag.collect(diag_host, fake_agent(api_with_alloc()), out)
    lines = diag.summary(out).splitlines()
    assert lines[0] == f"diagnostics bundle: {out}"
    assert lines[1] == "  alloc 5e6f7a8b client_status=failed; task app: dead failed=True " \
                       "restarts=0 events=['Started', 'Driver Failure']"
    assert [line.split("]")[0][-5:] for line in lines[2:]] == ["[WARN", "ERROR"]
    assert all(line.startswith("  plugin: ") for line in lines[2:])


def test_summary_of_a_partial_bundle(tmp_path):
    (tmp_path / "allocations.json").write_text("could not collect allocations.json: ...\n")
    assert diag.summary(tmp_path) == f"diagnostics bundle: {tmp_path}"


def test_summary_keeps_the_last_five_plugin_problems_and_caps_lines(tmp_path):
    (tmp_path / "plugin.log").write_text(
        "\n".join(f"[ERROR] java-crun: problem {i}" for i in range(10)))
    lines = diag.summary(tmp_path).splitlines()
    assert [line[-9:] for line in lines[1:]] == [f"problem {i}" for i in range(5, 10)]
    (tmp_path / "allocations.json").write_text(json.dumps([ALLOC] * 40))
    assert len(diag.summary(tmp_path, max_lines=25).splitlines()) == 25


# -- facts -----------------------------------------------------------------------------------


def test_facts_parse_key_value_lines_and_name_the_target(host):
    host.on("uname -r", "kernel=6.1.0-28-amd64\ncgroup_mode=v2\n"
                        "cgroup_controllers=cpuset cpu io memory pids\n"
                        "java=openjdk version \"17.0.13\" 2024-10-15\n"
                        "nomad=Nomad v1.11.3\nbox=\nnot a fact\n")
    found = facts.collect(host)
    assert found == {"target": "ssh://root@127.0.0.1:2222", "kernel": "6.1.0-28-amd64",
                     "cgroup_mode": "v2", "cgroup_controllers": "cpuset cpu io memory pids",
                     "java": 'openjdk version "17.0.13" 2024-10-15', "nomad": "Nomad v1.11.3",
                     "box": "", "not a fact": ""}
    assert json.loads(facts.render(found)) == found


def test_every_command_collect_runs_parses_as_bash(diag_host, tmp_path):
    diag.collect(diag_host, fake_agent(api_with_alloc()), tmp_path / "b")
    for call in diag_host.calls:
        assert bash_syntax_errors(call.cmd) == "", call.cmd
    assert bash_syntax_errors(facts.FACTS_SCRIPT) == ""
