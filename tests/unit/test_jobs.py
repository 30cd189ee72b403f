"""lab.nomad.jobs: the JSON shapes Nomad's HTTP API takes (names from api/jobs.go, api/tasks.go)."""

from __future__ import annotations

import json
import re

import pytest

from lab.nomad import jobs

URL = "http://127.0.0.1:8088/jars/hello.jar"


def test_java_task_downloads_the_jar_to_local_and_points_jar_path_at_it():
    task = jobs.java_task("app", URL)
    assert task["Driver"] == "java-crun"
    assert task["Config"] == {"jar_path": "local/hello.jar"}
    assert task["Artifacts"] == [
        {"GetterSource": URL, "RelativeDest": "local/hello.jar", "GetterMode": "file"}]
    assert task["Resources"] == {"CPU": 100, "MemoryMB": 256}
    assert "KillTimeout" not in task and "KillSignal" not in task and "User" not in task


def test_java_task_carries_every_option_with_durations_in_nanoseconds():
    task = jobs.java_task(
        "app", URL, jar_name="renamed.jar", args=["a", "b c"], jvm_options=["-Xmx64m"],
        env={"LAB_ECHO_ENV": "X"}, user="nobody", kill_signal="SIGINT", kill_timeout_s=2.5,
        memory_mb=128, memory_max_mb=512, cpu=200, checksum="ab" * 32)
    assert task["Config"] == {"jar_path": "local/renamed.jar", "args": ["a", "b c"],
                              "jvm_options": ["-Xmx64m"]}
    assert task["Artifacts"][0]["RelativeDest"] == "local/renamed.jar"
    assert task["Artifacts"][0]["GetterOptions"] == {"checksum": "sha256:" + "ab" * 32}
    assert task["Env"] == {"LAB_ECHO_ENV": "X"}
    assert task["User"] == "nobody"
    assert task["KillSignal"] == "SIGINT"
    assert task["KillTimeout"] == 2_500_000_000
    assert task["Resources"] == {"CPU": 200, "MemoryMB": 128, "MemoryMaxMB": 512}


def test_checksum_keeps_an_explicit_prefix_and_passes_garbage_through():
    assert jobs.normalise_checksum("sha256:" + "0" * 64) == "sha256:" + "0" * 64
    assert jobs.normalise_checksum("AB" * 32) == "sha256:" + "ab" * 32
    assert jobs.normalise_checksum("md5:nope") == "md5:nope"


def test_any_mode_downloads_into_local_and_keeps_the_urls_file_name():
    task = jobs.java_task("app", URL, artifact_mode="any")
    assert task["Artifacts"][0]["RelativeDest"] == "local/"
    assert task["Artifacts"][0]["GetterMode"] == "any"
    assert task["Config"]["jar_path"] == "local/hello.jar"
    with pytest.raises(ValueError, match="URL's file name"):
        jobs.java_task("app", URL, jar_name="other.jar", artifact_mode="any")


def test_no_artifact_for_a_missing_jar_test_but_the_name_is_required():
    task = jobs.java_task("app", None, jar_name="missing.jar")
    assert "Artifacts" not in task
    assert task["Config"]["jar_path"] == "local/missing.jar"
    with pytest.raises(ValueError, match="jar_name"):
        jobs.java_task("app", None)


def test_class_mode_and_raw_config_overrides():
    task = jobs.java_task("app", URL, main_class="lab.apps.hello.Hello")
    assert task["Config"] == {"class": "lab.apps.hello.Hello", "class_path": ["local/hello.jar"]}
    task = jobs.java_task("app", URL, main_class="X", class_path="local/other.jar")
    assert task["Config"]["class_path"] == ["local/other.jar"]
    task = jobs.java_task("app", URL, config={"jar_path": None, "bogus_field": 1})
    assert task["Config"] == {"bogus_field": 1}


def test_extra_artifacts_follow_the_jar():
    data = jobs.artifact("http://127.0.0.1:1/data.txt", "local/data.txt", checksum="c" * 64)
    task = jobs.java_task("app", URL, extra_artifacts=[data])
    assert [a["RelativeDest"] for a in task["Artifacts"]] == ["local/hello.jar", "local/data.txt"]
    with pytest.raises(ValueError, match="mode"):
        jobs.artifact(URL, "local/x", mode="zip")


def test_java_job_shape_restart_and_no_reschedule():
    body = jobs.java_job("lab-abc-x-0000", [jobs.java_task("app", URL)], restart_attempts=1,
                         restart_delay_s=1)
    job = body["Job"]
    assert set(body) == {"Job"}
    assert job["ID"] == job["Name"] == "lab-abc-x-0000"
    assert job["Type"] == "batch"
    assert job["Datacenters"] == ["*"]
    (group,) = job["TaskGroups"]
    assert group["Name"] == "app" and group["Count"] == 1
    assert group["RestartPolicy"] == {"Attempts": 1, "Delay": 1_000_000_000,
                                      "Interval": 300_000_000_000, "Mode": "fail"}
    assert group["ReschedulePolicy"] == {"Attempts": 0, "Unlimited": False}
    assert group["Tasks"][0]["Name"] == "app"
    json.dumps(body)  # what goes over the wire


def test_restart_interval_always_fits_all_attempts():
    policy = jobs.restart_policy(attempts=10, delay_s=60, mode="delay")
    assert policy["Interval"] >= 10 * policy["Delay"]
    with pytest.raises(ValueError, match="0 attempts"):
        jobs.restart_policy(attempts=0, delay_s=1, mode="delay")
    with pytest.raises(ValueError, match="restart mode"):
        jobs.restart_policy(attempts=1, delay_s=1, mode="never")


def test_java_job_rejects_what_nomad_would_reject():
    task = jobs.java_task("app", URL)
    with pytest.raises(ValueError, match="space"):
        jobs.java_job("has space", [task])
    with pytest.raises(ValueError, match="unique"):
        jobs.java_job("lab-x", [task, task])
    with pytest.raises(ValueError, match="at least one task"):
        jobs.java_job("lab-x", [])
    with pytest.raises(ValueError, match="job type"):
        jobs.java_job("lab-x", [task], job_type="cron")


def test_service_job_two_tasks_disk_and_meta():
    tasks = [jobs.java_task("writer", URL), jobs.java_task("reader", URL)]
    job = jobs.java_job("lab-x", tasks, job_type="service", disk_mb=600, meta={"run": "r1"},
                        group="pair")["Job"]
    assert job["Type"] == "service"
    assert job["Meta"] == {"run": "r1"}
    assert job["TaskGroups"][0]["EphemeralDisk"] == {"SizeMB": 600}
    assert [t["Name"] for t in job["TaskGroups"][0]["Tasks"]] == ["writer", "reader"]


@pytest.mark.parametrize("test_name, expected", [
    ("test_signals[SIGHUP]", "signals-sighup"),
    ("tests/e2e/test_x.py::test_Stop Job!", "tests-e2e-test-x-py-test-stop-job"),
    ("___", "job"),
])
def test_job_id_is_sanitised_and_run_tagged(test_name, expected):
    assert jobs.job_id("Run 01", test_name, suffix="beef") == f"lab-run-01-{expected}-beef"


def test_job_id_is_unique_short_and_valid():
    ids = {jobs.job_id("a1b2c3", "test_" + "very_long_name" * 10) for _ in range(50)}
    assert len(ids) > 45  # 4 random hex digits
    for value in ids:
        assert len(value) <= jobs.MAX_JOB_ID
        assert re.fullmatch(r"lab-a1b2c3-[a-z0-9-]+-[0-9a-f]{4}", value)
        assert "--" not in value


def test_job_id_refuses_a_run_id_that_leaves_no_room():
    with pytest.raises(ValueError, match="too long"):
        jobs.job_id("r" * 60, "test_x")
