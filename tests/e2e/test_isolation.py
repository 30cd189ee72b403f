"""Beyond the stories, what a real driver needs: the memory limit is enforced (OOM kill, and the
events say so), and the app is isolated: it cannot see the host's processes, cannot write
outside its directories, runs with no_new_privileges and without dangerous capabilities."""

from __future__ import annotations

import pytest

from lab.checks import fsprobe, probes
from lab.core.wait import Pending, until
from lab.nomad import events

# Capabilities that would let a task escape or take over the host (or its network).
DANGEROUS_CAPS = {
    "CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_MODULE", "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO", "CAP_SYS_BOOT", "CAP_SYS_TIME", "CAP_MKNOD", "CAP_DAC_READ_SEARCH",
    "CAP_BPF", "CAP_PERFMON", "CAP_SYS_RESOURCE", "CAP_LINUX_IMMUTABLE", "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE", "CAP_SYSLOG", "CAP_AUDIT_CONTROL", "CAP_CHECKPOINT_RESTORE",
}


# -- memory ----------------------------------------------------------------------------------
def test_app_allocating_beyond_its_memory_is_oom_killed_and_the_events_say_so(jobs, lab_config):
    """Memory limit: an app touching more native memory than the task's 128 MiB is OOM-killed
    by the kernel (exit 137, SIGKILL); the Terminated event carries oom_killed=true and a
    driver event says "OOM Killed" with the limit and what to change."""
    memory_mb = 128
    run = jobs.run("memhog", args=["native"], memory_mb=memory_mb)

    run.wait_dead()

    terminated = events.of_type(run.events(), "Terminated")
    assert len(terminated) == 1, events.describe(run.events())
    assert terminated[0]["ExitCode"] == 137, terminated[0]
    assert (terminated[0].get("Details") or {}).get("oom_killed") == "true", terminated[0]
    assert run.task_state()["Failed"] is True

    def oom_event():
        found = [e for e in events.containing(run.events(), "OOM Killed")
                 if e["Type"] != "Terminated"]
        return found[0] if found else Pending(run.event_types())

    # The driver's own event travels on a separate stream: it may land after "Terminated".
    event = until(oom_event, lab_config.timeout("event"), f"job {run.id}: an OOM Killed event")
    assert f"{memory_mb} MiB" in events.text(event), event

    allocated = [int(line.split()[1]) for line in run.logs().splitlines()
                 if line.startswith("allocated ")]
    assert allocated, run.logs()
    # It got part of the way, never beyond the limit: the kill came from the cgroup.
    assert 16 <= allocated[-1] < memory_mb, allocated[-3:]
    assert "memhog holding" not in run.logs()


# -- isolation -------------------------------------------------------------------------------
@pytest.mark.agent(plugin_config={"allow_root": True})  # the driver refuses root by default
def test_app_is_isolated_from_host_processes_and_files_with_no_new_privs_nor_dangerous_caps(
        jobs, agent, lab_host):
    """Isolation, for the default user (nobody) and for a task running as root alike:
    - it cannot see the host's processes: /proc inside holds only its own pid 1, while the lab
      host runs dozens;
    - it cannot write outside its directories: /, /usr and /etc are read-only, only /local,
      /alloc, /secrets and a private /tmp are writable; the agent's data dir (other tasks'
      files), /var/lib and /root do not exist in it; neither nobody nor root can read the
      host's password hashes (/etc/shadow) or SSH host keys (/etc/ssh), although root holds
      CAP_DAC_OVERRIDE: the driver masks them;
    - it runs with no_new_privileges;
    - it holds no dangerous capability: nobody has none at all, root keeps only harmless ones
      (no CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_MODULE, CAP_SYS_PTRACE, ...)."""
    hidden = [agent.dir, "/var/lib", "/root"]
    secrets = ["/etc/shadow", "/etc/ssh/ssh_host_ed25519_key"]
    paths = [*secrets, *hidden]
    as_nobody = jobs.run("fsprobe", args=paths)
    as_root = jobs.submit(jobs.job(jobs.task("fsprobe", args=paths, user="root"),
                                   job_id=jobs.id("root")))
    # The secrets must exist on the lab host, or "missing" inside would prove nothing.
    absent = [p for p, f in probes.files(lab_host, secrets).items() if not f.size]
    assert not absent, f"the lab host lacks {absent}: the box should have them"
    host_pids = probes.process_count(lab_host)
    assert host_pids > 20, f"the lab host shows only {host_pids} processes"

    problems = []
    for who, run in (("nobody", as_nobody), ("root", as_root)):
        run.wait_dead()
        assert run.exit_codes() == [0], (who, run.event_types())
        report = fsprobe.report(run.logs())

        def check(ok: bool, what: str) -> None:
            if not ok:
                problems.append(f"{who}: {what}")  # noqa: B023 - used at once, in this loop

        # Only the driver's init (PID 1) and itself: nothing of the host's.
        visible = fsprobe.one(report, "proc pids")
        check(sorted(visible.split(), key=int) == ["1", fsprobe.one(report, "pid")],
              f"sees processes other than the init and itself: {visible}")
        for path in ("/", "/usr", "/etc"):
            got = fsprobe.one(report, f"write {path}")
            check(got.startswith("denied"), f"could write to {path}: {got}")
        for path in ("/local", "/alloc", "/secrets", "/tmp"):
            got = fsprobe.one(report, f"write {path}")
            check(got == "ok", f"cannot write to its own {path}: {got}")
        for path in hidden:
            got = fsprobe.one(report, f"file {path}")
            check(got == "missing", f"sees the host's {path}: {got}")
        nnp = fsprobe.one(report, "nonewprivs")
        check(nnp == "1", f"NoNewPrivs={nnp}")
        held = set(fsprobe.one(report, "capeff names").split(",")) - {"none"}
        dangerous = sorted(held & DANGEROUS_CAPS)
        check(not dangerous, f"holds dangerous capabilities {dangerous}")
        for path in secrets:
            # Masked: an empty /dev/null (file) or empty tmpfs (dir), or unreadable to nobody.
            got = fsprobe.one(report, f"file {path}")
            check(got.startswith(("unreadable", "missing")) or got == "readable size=0",
                  f"can read the host's {path}: {got}")
        if who == "nobody":
            uid = fsprobe.one(report, "uid")
            check(uid == "65534", f"uid {uid}, expected nobody")
            check(not held, f"holds capabilities {sorted(held)}")
        else:
            uid = fsprobe.one(report, "uid")
            check(uid == "0", f"uid {uid}, expected root")
            # Proves the probe sees capabilities at all: root keeps the harmless default set.
            check("CAP_CHOWN" in held, f"root lacks even CAP_CHOWN: {sorted(held)}")
    assert not problems, "\n".join(problems)


def test_alloc_exec_into_a_task_runs_as_the_tasks_user_not_root(jobs, agent, lab_host):
    """`nomad alloc exec` into a running task runs the command as the task's user (nobody
    here, as Nomad's exec driver does), not as root: an exec must not hold more privilege
    than the task itself."""
    run = jobs.run("sleeper", args=["forever"])
    run.wait_log("sleeper started")

    who = probes.exec_in_task(lab_host, agent, run.alloc()["ID"], ["id", "-u"])

    run.stop()
    run.wait_dead()
    assert who.ok and who.stdout.strip() == "65534", who
