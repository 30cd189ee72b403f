"""Story 1, live job execution: the agent runs with the plugin, jobs go in over the HTTP API,
waits are bounded and say what they saw, real logs come back, nothing is left behind."""

from __future__ import annotations

import secrets
import time

import pytest

from lab.checks import diag, janitor
from lab.core.errors import LabTimeout
from lab.remote.layout import SHIM_PATH

DRIVER = "java-crun"
ATTR = f"driver.{DRIVER}."


def test_node_reports_java_crun_detected_and_healthy_with_crun_and_java_versions(
        api, agent, lab_facts):
    """The agent runs with the plugin loaded: the node reports driver java-crun detected and
    healthy, with the crun and Java versions of the lab host as node attributes."""
    node = api.node(agent.node_id)
    info = node["Drivers"][DRIVER]
    assert info["Detected"] and info["Healthy"], info
    assert info["HealthDescription"] == "Healthy", info

    attrs = node["Attributes"]
    assert attrs.get(f"driver.{DRIVER}") == "1", sorted(k for k in attrs if DRIVER in k)
    crun_version = attrs.get(ATTR + "crun.version", "")
    java_version = attrs.get(ATTR + "java.version", "")
    # The lab's own probes of the host (`crun --version`, `java -version`) must agree.
    assert crun_version and crun_version in lab_facts["crun"], (crun_version, lab_facts)
    assert java_version and f'"{java_version}"' in lab_facts["java"], (java_version, lab_facts)
    assert attrs.get(ATTR + "cgroup.mode") == "v2", attrs.get(ATTR + "cgroup.mode")
    # Tasks start from the small shim binary the lab installs, not the plugin's own fallback.
    assert attrs.get(ATTR + "shim") == SHIM_PATH, attrs.get(ATTR + "shim")


def test_job_submitted_over_http_api_completes_and_is_reported_dead(jobs, api, lab_config):
    """Jobs are submitted through the HTTP API and completion is awaited with a timeout taken
    from the lab's (scaled, configurable) timeouts."""
    run = jobs.run("exitcode", args=["0"])
    assert run.register_result and run.register_result.get("EvalID"), run.register_result
    assert any(j["ID"] == run.id for j in api.jobs()), "the job is not listed by /v1/jobs"

    state = run.wait_dead(timeout=lab_config.timeout("job"))

    assert state["Failed"] is False, run.event_types()
    assert run.exit_codes() == [0], run.event_types()
    assert run.alloc()["ClientStatus"] == "complete"
    assert api.job(run.id)["Status"] == "dead"


def test_wait_timeout_names_job_last_state_and_diagnostics_and_cleanup_still_happens(
        request, jobs, lab_host, lab_config):
    """When a wait times out, the error names the job, the state it last saw and where the
    diagnostics are. The job is left running on purpose: the agent fixture's teardown must
    still purge it and remove its container, or it fails this test with the leftovers."""
    run = jobs.run("sleeper", args=["forever"])
    run.wait_running()
    assert janitor.scan(lab_host).get("container"), "a running task should have a container"

    limit = 2.0
    started = time.monotonic()
    with pytest.raises(LabTimeout) as caught:
        run.wait_dead(timeout=limit)
    elapsed = time.monotonic() - started

    message = str(caught.value)
    assert run.id in message
    assert f"timed out after {limit:.1f}s" in message
    # The last observation: the allocation and the task as they really were.
    assert "client_status=running" in str(caught.value.last), caught.value.last
    assert "task app: running" in str(caught.value.last), caught.value.last
    bundle = diag.bundle_dir(lab_config.reports_dir, request.node.nodeid)
    assert f"diagnostics: {bundle}" in message, message
    # The configured timeout is honoured (one slow poll at most on top of it).
    assert elapsed < limit + 15, f"wait took {elapsed:.1f}s for a {limit}s timeout"


def test_stdout_and_stderr_come_back_separately_with_arguments_and_environment(jobs):
    """Real logs are read back: stdout and stderr separately, the arguments (spaces, quotes,
    non-ASCII kept intact) and the environment (NOMAD_ALLOC_ID, NOMAD_TASK_NAME, a job env
    variable) echoed by the app."""
    token = secrets.token_hex(4)
    args = ["plain", "two words", "quote'\"s", "ünïcødé", "$HOME", ""]
    run = jobs.run("hello", args=args,
                   env={"LAB_ECHO_ENV": "LAB_TOKEN,LAB_UNSET", "LAB_TOKEN": token})

    run.wait_dead()

    assert run.exit_codes() == [0], run.event_types()
    alloc_id = run.alloc()["ID"]
    stdout = run.logs(stream="stdout").splitlines()
    stderr = run.logs(stream="stderr").splitlines()
    assert "hello on stderr" in stderr and "hello on stderr" not in stdout
    assert "hello from java-crun" in stdout and "hello from java-crun" not in stderr
    assert f"argc={len(args)}" in stdout
    for i, arg in enumerate(args):
        assert f"arg[{i}]={arg}" in stdout, (i, arg, stdout)
    assert f"env NOMAD_ALLOC_ID={alloc_id}" in stdout
    assert "env NOMAD_TASK_NAME=app" in stdout
    assert f"env LAB_TOKEN={token}" in stdout
    assert "env LAB_UNSET=<unset>" in stdout


def test_large_output_comes_back_complete_and_in_order(jobs):
    """A large output (20,000 lines, ~1 MiB) is read back through the logs API complete and in
    order: no line lost, duplicated or reordered."""
    count = 20_000
    run = jobs.run("bigoutput", args=[str(count)])

    run.wait_dead()

    assert run.exit_codes() == [0], run.event_types()
    lines = run.logs(stream="stdout").splitlines()
    expected = [f"line {i:06d} the quick brown fox jumps over the lazy dog"
                for i in range(1, count + 1)] + [f"bigoutput done lines={count}"]
    assert len(lines) == len(expected), f"{len(lines)} lines, expected {len(expected)}"
    mismatch = next((i for i, (a, b) in enumerate(zip(lines, expected, strict=True)) if a != b),
                    None)
    assert mismatch is None, f"line {mismatch + 1}: {lines[mismatch]!r} != {expected[mismatch]!r}"


def test_leftover_check_sees_everything_a_running_task_creates(jobs, lab_host):
    """The automatic after-test check is not vacuous: while a task runs, the scan it uses finds
    the task's crun container, bundle, cgroup and java process on the lab host (each of which
    the agent fixture then requires to be gone after every test)."""
    run = jobs.run("sleeper", args=["forever"])
    run.wait_running()
    alloc_id = run.alloc()["ID"]

    found = janitor.scan(lab_host)

    containers = found.get("container", [])
    assert any(alloc_id in c for c in containers), (alloc_id, janitor.describe(found))
    assert any(alloc_id in b for b in found.get("bundle", [])), janitor.describe(found)
    assert any(alloc_id in c for c in found.get("cgroup", [])), janitor.describe(found)
    assert any("sleeper.jar" in p for p in found.get("java_process", [])), \
        janitor.describe(found)
    run.stop()
    run.wait_dead()
