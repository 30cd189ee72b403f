"""Story 2, container execution: the JAR runs in a crun container with its own namespaces, a
read-only root, writable task dirs and the task's memory limit; runtime breakage (a missing JRE
library, crun failing or missing, a bad JVM option) is reported with the real cause; artifacts
and the shared alloc dir are where a task expects them; the console output is exact."""

from __future__ import annotations

import hashlib
import json
import re
import secrets

import pytest

from lab import faults
from lab.checks import fsprobe, probes
from lab.core.wait import Pending, until
from lab.nomad import events

DRIVER = "java-crun"
MIB = 1024 * 1024
# Above the kernel's PID_MAX_LIMIT (4194304 on 64-bit): the pids controller refuses it.
PIDS_LIMIT_THE_KERNEL_REFUSES = 5_000_000


# -- what the tests read ---------------------------------------------------------------------
def driver_state(api, agent) -> dict:
    return api.driver_info(agent.node_id, DRIVER)


def wait_driver(api, agent, lab_config, want: str, condition) -> dict:
    """Poll the node's java-crun driver until `condition(info)`; return the info."""
    def check():
        info = driver_state(api, agent)
        return info if condition(info) else Pending(
            f"Detected={info.get('Detected')} Healthy={info.get('Healthy')}: "
            f"{info.get('HealthDescription')}")

    return until(check, lab_config.timeout("fingerprint"), f"driver {DRIVER} {want}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the container ---------------------------------------------------------------------------
def test_jar_runs_in_crun_container_under_the_init_with_own_hostname_readonly_root_memory_limit(
        jobs, agent, lab_host):
    """The JAR runs in a crun container: in its own pid namespace it sees only the driver's init
    (PID 1) and itself,
    has its own hostname, a read-only root (writing to /usr fails), writable /local, /alloc and
    /secrets, and a cgroup whose memory.max is the task's memory. The lab host's side agrees:
    crun runs the container, in another pid namespace, in a cgroup with that limit."""
    memory_mb = 192
    probe = jobs.run("fsprobe", memory_mb=memory_mb)
    sleeper = jobs.run("sleeper", args=["forever"], memory_mb=memory_mb)

    # The host's view of a live container.
    sleeper.wait_running()
    container = probes.crun(lab_host, agent).of_alloc(sleeper.alloc()["ID"])
    assert container.status == "running", container
    jvm, host_init = probes.process(lab_host, container.pid), probes.process(lab_host, 1)
    host_name = probes.hostname(lab_host)
    assert jvm.pid_namespace != host_init.pid_namespace, \
        "the JVM shares the host's pid namespace"
    assert sleeper.alloc()["ID"] in jvm.cgroup, f"cgroup {jvm.cgroup} is not the task's"
    host_limit = probes.cgroup_value(lab_host, jvm.cgroup, "memory.max")
    assert host_limit == str(memory_mb * MIB), (jvm.cgroup, host_limit)
    sleeper.stop()

    # The app's own view.
    probe.wait_dead()
    assert probe.exit_codes() == [0], probe.event_types()
    alloc_id = probe.alloc()["ID"]
    report = fsprobe.report(probe.logs())
    problems = []

    def expect(key, want):
        got = fsprobe.one(report, key)
        if not (want(got) if callable(want) else got == want):
            problems.append(f"{key}: {got!r}, expected {want if not callable(want) else 'ok'}")

    # PID 1 is the driver's init (java-crun-init), which forwards signals and reaps; the JVM
    # is its child, and the two are all the container can see.
    jvm_pid = fsprobe.one(report, "pid")
    expect("pid", lambda pid: pid not in ("", "1"))
    expect("proc pids", lambda pids: sorted(pids.split(), key=int) == ["1", jvm_pid])
    expect("hostname", f"app-{alloc_id[:8]}")
    expect("hostname", lambda h: h != host_name)
    expect("cwd", "/local")
    for path in ("/", "/usr", "/etc"):
        expect(f"write {path}", lambda v: v.startswith("denied") and "Read-only" in v)
    for path in ("/local", "/alloc", "/secrets", "/tmp"):
        expect(f"write {path}", "ok")
    # The mount table agrees (a write denied to nobody alone would not prove a read-only root).
    for path in ("/", "/usr", "/etc"):
        expect(f"mount {path}", lambda v: v.startswith("ro "))
    for path in ("/local", "/alloc", "/secrets"):
        expect(f"mount {path}", lambda v: v.startswith("rw "))
    expect("cgroup", "0::/")  # its own cgroup namespace: its cgroup is the root it sees
    expect("memory.max", str(memory_mb * MIB))
    assert not problems, "\n".join(problems) + "\n\nfsprobe said:\n" + probe.logs()
    sleeper.wait_dead()


@pytest.mark.exclusive
def test_missing_jre_library_makes_driver_unhealthy_naming_it_and_job_is_not_placed_until_healed(
        jobs, api, agent, lab_host, lab_config):
    """A missing Java runtime dependency (libjli.so of the JRE hidden) is detected: the driver
    turns unhealthy with a description naming the library, and a job is not placed (its
    evaluation reports the missing driver). After healing, the driver is healthy and a job
    runs."""
    lib = "libjli.so"
    with faults.java_library_missing(lab_host, lib) as fault:
        assert lib in fault.details["observed"], fault.details
        info = wait_driver(api, agent, lab_config, "unhealthy",
                           lambda i: i.get("Detected") and not i.get("Healthy"))
        assert lib in info["HealthDescription"], info
        assert "java runtime not usable" in info["HealthDescription"], info

        blocked = jobs.run("hello")
        evaluation = blocked.wait_evaluation_failed_placement()
        failed = evaluation["FailedTGAllocs"]["app"]
        assert failed.get("ConstraintFiltered", {}).get("missing drivers") == 1, failed
        assert blocked.allocs() == [], "a job was placed on a node whose driver is unhealthy"
        blocked.stop(purge=True)

    info = wait_driver(api, agent, lab_config, "healthy again",
                       lambda i: i.get("Detected") and i.get("Healthy"))
    assert info["HealthDescription"] == "Healthy", info
    run = jobs.run("hello")
    run.wait_dead()
    assert run.exit_codes() == [0], run.event_types()
    assert "hello from java-crun" in run.logs()


@pytest.mark.exclusive
def test_crun_failing_to_create_the_container_reports_cruns_own_message(jobs, lab_host):
    """A container creation failure is caught and reported with crun's own message in the task
    events (Driver Failure), and the task fails without running the app."""
    message = f"lab-injected crun failure {secrets.token_hex(4)}: cannot create container"
    with faults.crun_failing(lab_host, message=message):
        run = jobs.run("hello")
        run.wait_dead()

    failure = events.last(run.events(), "Driver Failure")
    assert message in events.text(failure), failure
    assert "crun" in events.text(failure), failure
    assert run.task_state()["Failed"] is True
    # The app never ran: no Started event (and Nomad has no log for a task never started).
    assert "Started" not in run.event_types(), run.event_types()


@pytest.mark.agent(plugin_config={"pids_limit": PIDS_LIMIT_THE_KERNEL_REFUSES})
def test_crun_failing_for_a_real_reason_reports_cruns_own_message_and_the_task_restarts(
        jobs, request):
    """A real crun failure, not a stand-in: the plugin's pids_limit (5,000,000) is above what
    the kernel's pids controller accepts, so crun itself fails to create the container
    (writing pids.max: Invalid argument). The Driver Failure event carries crun's own words
    (`crun: ...pids.max...`), not just an exit status; a crun failure is the node's problem
    (recoverable: "Restarting"), and after the allowed attempt the task ends "Not Restarting"
    without the app ever starting."""
    run = jobs.run("hello", job_kwargs={"restart_attempts": 1, "restart_delay_s": 1,
                                        "restart_mode": "fail"})

    run.wait_alloc_terminal()

    evs = run.events()
    failures = events.of_type(evs, "Driver Failure")
    assert len(failures) == 2, events.describe(evs)
    said = events.text(failures[0])
    request.node.user_properties.append(("crun_message", said))
    assert "crun: " in said and "pids.max" in said and "Invalid argument" in said, said
    assert "exit status" not in said, f"crun's message is missing, only its status: {said}"
    lifecycle = [t for t in events.types(evs)
                 if t in ("Started", "Driver Failure", "Restarting", "Not Restarting")]
    assert lifecycle == ["Driver Failure", "Restarting", "Driver Failure", "Not Restarting"], \
        events.describe(evs)
    assert run.task_state()["Failed"] is True


@pytest.mark.exclusive
def test_crun_missing_makes_driver_undetected_and_job_not_placed(
        jobs, api, agent, lab_host, lab_config):
    """crun missing is caught before any container: the driver reports it (not detected, with a
    description that says crun was not found) and a job is not placed. Healed, it is back."""
    with faults.crun_missing(lab_host):
        info = wait_driver(api, agent, lab_config, "undetected (crun missing)",
                           lambda i: not i.get("Healthy"))
        assert "crun executable not found" in info["HealthDescription"], info

        run = jobs.run("hello")
        evaluation = run.wait_evaluation_failed_placement()
        assert "missing drivers" in json.dumps(evaluation["FailedTGAllocs"]["app"]), evaluation
        assert run.allocs() == []
        run.stop(purge=True)

    wait_driver(api, agent, lab_config, "healthy again", lambda i: i.get("Healthy"))


def test_invalid_jvm_options_are_reported_with_the_jvm_or_driver_message(jobs):
    """Execution failures from a bad `jvm_options` entry are reported with their real cause: an
    option the JVM does not know fails the task with the JVM's own error on stderr; an entry
    that is not an option at all is refused by the driver (Driver Failure, no restart)."""
    unknown = jobs.run("hello", jvm_options=["-XX:+NoSuchOption"])
    not_option = jobs.submit(jobs.job(jobs.task("hello", jvm_options=["NoDash"]),
                                      job_id=jobs.id("nodash"), restart_attempts=2,
                                      restart_delay_s=1, restart_mode="fail"))

    unknown.wait_dead()
    assert unknown.exit_codes() == [1], unknown.event_types()
    stderr = unknown.logs(stream="stderr")
    assert "Unrecognized VM option 'NoSuchOption'" in stderr, stderr
    assert "Could not create the Java Virtual Machine" in stderr, stderr
    assert "hello from java-crun" not in unknown.logs()

    not_option.wait_dead()
    failure = events.last(not_option.events(), "Driver Failure")
    assert "jvm_options[0]" in events.text(failure) and "NoDash" in events.text(failure), failure
    types = not_option.event_types()
    assert "Restarting" not in types and "Started" not in types, types


# -- artifacts and the alloc dir -------------------------------------------------------------
def test_artifacts_are_mounted_at_local_inside_the_container_byte_for_byte(
        jobs, jars, artifacts, agent, lab_host):
    """An artifact is mounted and accessible inside the container at the expected path, byte
    for byte: the JAR at /local/<name>.jar and an extra data artifact at /local/conf/ have,
    read inside the running container (sha256sum through `nomad alloc exec`), the sha256 of
    the local files the artifact server sent; a path never downloaded is not there. The task
    user (nobody) can read both: the JVM runs the JAR as nobody, and the data file is
    world-readable in the task dir."""
    data = secrets.token_bytes(4096 + secrets.randbelow(4096))
    name = f"data-{secrets.token_hex(4)}.bin"
    artifacts.add(name, data)
    extra = {"GetterSource": artifacts.exposed.url(name), "RelativeDest": f"local/conf/{name}",
             "GetterMode": "file"}
    run = jobs.run("sleeper", args=["forever"], extra_artifacts=[extra])

    run.wait_log("sleeper started")
    alloc_id = run.alloc()["ID"]

    assert "Downloading Artifacts" in run.event_types()
    inside = probes.sha256_in_task(lab_host, agent, alloc_id,
                                   ["/local/sleeper.jar", f"/local/conf/{name}"])
    assert inside == {"/local/sleeper.jar": sha256(jars["sleeper"].read_bytes()),
                      f"/local/conf/{name}": sha256(data)}, inside
    absent = probes.exec_in_task(lab_host, agent, alloc_id,
                                 ["test", "-e", "/local/conf/absent.bin"])
    assert absent.rc == 1, absent
    on_host = probes.file(lab_host, f"{probes.task_dir(agent, alloc_id)}/local/conf/{name}")
    assert on_host.is_file and on_host.mode & 0o004, on_host  # readable by nobody
    run.stop()
    run.wait_dead()


def test_shared_alloc_dir_passes_a_file_between_two_tasks_of_one_group(jobs):
    """The shared alloc dir works between two tasks of one group: what one task writes to
    /alloc, the other reads."""
    token = secrets.token_hex(8)
    writer = jobs.task("allocshare", name="writer", args=["write", "shared.txt", token],
                       memory_mb=160)
    reader = jobs.task("allocshare", name="reader", args=["read", "shared.txt", "600"],
                       memory_mb=160)
    run = jobs.submit(jobs.job(writer, reader))

    run.wait_dead(task="reader")
    run.wait_dead(task="writer")

    assert run.exit_codes("writer") == [0], run.event_types("writer")
    assert run.exit_codes("reader") == [0], (run.event_types("reader"), run.logs("reader"))
    wrote = re.search(rf"^wrote (/alloc/\S*shared\.txt): {token}$", run.logs("writer"), re.M)
    assert wrote, run.logs("writer")
    assert f"read {wrote.group(1)}: {token}" in run.logs("reader").splitlines()


def test_console_output_of_the_jar_is_exactly_what_it_prints(jobs, lab_facts):
    """The expected console output of the JAR is verified line by line: stdout and stderr are
    exactly what the app printed, nothing lost, added or interleaved."""
    run = jobs.run("hello", args=["console"])

    run.wait_dead()

    assert run.exit_codes() == [0], run.event_types()
    java = lab_facts["java"].split('"')[1]
    assert run.logs(stream="stdout").splitlines() == [
        "hello from java-crun",
        "argc=1",
        "arg[0]=console",
        f"env NOMAD_ALLOC_ID={run.alloc()['ID']}",
        "env NOMAD_TASK_NAME=app",
        "cwd=/local",
        f"java.version={java}",
        "hello done",
    ]
    assert run.logs(stream="stderr").splitlines() == ["hello on stderr"]
