"""Story 6, infrastructure reliability: own agent per test, cleanup after Ctrl-C, dynamic ports,
the diagnostics bundle, the recorded environment, and CI without manual set-up.

Nested runs. Some tests run pytest again in a subprocess (the "inner run") against the same lab
host. The outer session holds the lab host's lease (lab.remote.lease); the inner run inherits its
token (LAB_LEASE in the environment) and shares the lease instead of waiting for it. That is
safe only because the outer test is exclusive (automatically, through `inner_runs` or
`pytester`): nothing of the outer session, not even the next test's agent, is on the host for
the inner run's start-up sweep to remove. The inner run still addresses the host by its plain
ssh:// URL, and timeouts are passed on explicitly (an ssh:// target is not scaled for TCG by
default).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lab.checks import diag, janitor, probes
from lab.core.config import ROOT
from lab.core.wait import Pending, until
from lab.nomad.agent import AgentOptions, NomadAgent
from lab.nomad.jobrun import JobRun
from lab.remote import lease

pytest_plugins = ["pytester"]

USUAL_NOMAD_PORTS = (4646, 4647, 4648)


# -- nested runs ----------------------------------------------------------------------------
def inner_env(lab_config, lab_host, needs_driver: bool = True) -> dict[str, str]:
    """Environment for a pytest run inside this one, on the same lab host (see module doc).

    needs_driver: the inner run's tests start agents. Then the calling test skips on a lab host
    without cgroup v2, as agent tests do there (tests/e2e/conftest.py, which the inner session
    does not load: its agents would wait for a healthy driver until their deadlines; on the
    bookworm v1 lab the Ctrl-C test was still waiting after 5 minutes)."""
    if needs_driver:
        fs = lab_host.run("stat -fc %T /sys/fs/cgroup").stdout.strip()
        if fs != "cgroup2fs":
            pytest.skip(f"its inner pytest run's tests need cgroup v2 (the java-crun driver "
                        f"refuses other modes); /sys/fs/cgroup on the lab host is {fs}")
    spec = lab_host.spec
    alias = f"ssh://{spec.user}@{spec.host}:{spec.port}"
    if alias == lab_config.target:
        alias += "/"  # an ssh:// target (unscaled unless told); the lease is shared anyway
    env = {k: v for k, v in os.environ.items()
           if k not in ("LAB_KEEP", "PYTEST_ADDOPTS", "LAB_TARGET", "LAB_TARGETS",
                        "LAB_SSH_KEY")}
    env.update(LAB_TARGET=alias, LAB_TIMEOUT_SCALE=f"{lab_config.scale:g}",
               PYTHONUNBUFFERED="1")
    if spec.key_file:
        env["LAB_SSH_KEY"] = str(spec.key_file)
    return env


def inner_budget(lab_config) -> float:
    """Long enough for one inner run with one agent and one job, set up and torn down."""
    return (lab_config.timeout("agent_ready") + lab_config.timeout("job")
            + 3 * lab_config.timeout("agent_stop") + lab_config.timeout("ssh"))


LONG_JOB_TEST = '''
import os
import re
import pathlib


def test_long_job(jobs, agent):
    run = jobs.run("sleeper")
    run.wait_log("sleeper started")
    pathlib.Path(os.environ["LAB_E2E_MARKER"]).write_text(f"{run.id} {agent.id}")
    run.wait_dead(timeout=3600)  # until interrupted
'''


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class InnerRun:
    """pytest in a subprocess of its own process group, output to a file."""

    def __init__(self, tmp_path: Path, env: dict[str, str], source: str, *args: str):
        self.dir = tmp_path
        self.test_file = tmp_path / f"test_inner_{secrets.token_hex(3)}.py"
        self.test_file.write_text(source)
        self.marker = tmp_path / "job-running"
        self.log = tmp_path / "inner.log"
        env = {**env, "LAB_E2E_MARKER": str(self.marker)}
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-v",
                 "--rootdir", str(tmp_path), *args, str(self.test_file)],
                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, like a foreground job
                # A run started in the background (CI, `cmd &`) inherits SIGINT ignored, and
                # Python then never raises KeyboardInterrupt: give the child a real Ctrl-C.
                preexec_fn=_default_sigint)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_marker(self, timeout: float) -> list[str]:
        def check():
            if self.marker.exists() and self.marker.read_text():
                return self.marker.read_text().split()
            if self.proc.poll() is not None:
                raise AssertionError(f"inner run ended (rc {self.proc.returncode}) before its "
                                     f"job ran:\n{self.output()[-3000:]}")
            return Pending(self.output().strip().splitlines()[-1:] or "no output yet")

        return until(check, timeout, "the inner run's job running")

    def interrupt(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.interrupt(signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"inner run still running after {timeout:.0f}s; killed. "
                                 f"Output:\n{self.output()[-3000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.interrupt(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def inner_runs(tmp_path, lab_config, lab_host):
    """start(source, *pytest args) -> InnerRun; every inner run is killed at the end, and a
    hard-killed one's traces swept, so a failing test never leaves another run behind."""
    started: list[InnerRun] = []
    env = inner_env(lab_config, lab_host)

    def start(source: str, *args: str) -> InnerRun:
        run_dir = tmp_path / f"inner{len(started)}"
        run_dir.mkdir()
        run = InnerRun(run_dir, env, source, *args)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill()
    # Whatever an inner run left (a killed run's agent; a sweep that missed something), remove
    # it here, so that a failure of this test never fails the tests after it. `systemctl kill`
    # reaches every process of the inner agents' units, whatever their KillMode.
    units = [f"{run.marker.read_text().split()[1]}.service" for run in started
             if run.marker.exists() and len(run.marker.read_text().split()) == 2]
    if janitor.scan(lab_host):
        for unit in units:
            probes.stop_unit(lab_host, unit, kill=True)
        janitor.sweep(lab_host)


# -- own agent per test ---------------------------------------------------------------------
@pytest.mark.slow  # two agents and two JVMs: 170 s under TCG
def test_an_agent_sees_nothing_of_another_agents_job_node_containers_or_data_dir(
        jobs, agent, lab_host, lab_config):
    """Per-test isolation, proved within one test: beside this test's agent, running a job, a
    second agent is started the way every test's own is (as the next test's is, ahead of
    time). Each is a cluster of its own: its API knows only its own job, allocation and node;
    its driver's crun root holds only its own container; each allocation's directory is under
    its own agent's data dir only; ports, unit and data dir differ. Stopping the second agent
    removes its unit and data dir and leaves the first agent's task running."""
    mine = jobs.run("sleeper", args=["forever"])
    peer = NomadAgent(lab_host, lab_config.run_id, f"peer{secrets.token_hex(2)}",
                      ready_timeout=lab_config.timeout("agent_ready"),
                      stop_timeout=lab_config.timeout("agent_stop"), options=AgentOptions())
    started = False
    try:
        peer.start()
        started = True
        theirs = JobRun(peer.api, jobs.job(jobs.task("sleeper", args=["forever"]),
                                           job_id=jobs.id("peer")), lab_config.timeout).submit()
        mine.wait_running()
        theirs.wait_running()
        my_alloc, their_alloc = mine.alloc()["ID"], theirs.alloc()["ID"]

        for one, other, job, alloc in ((agent, peer, mine, my_alloc),
                                       (peer, agent, theirs, their_alloc)):
            seen = f"{one.id} sees"
            assert [j["ID"] for j in one.api.jobs()] == [job.id], seen
            assert [a["ID"] for a in one.api.allocations()] == [alloc], seen
            assert [n["ID"] for n in one.api.nodes()] == [one.node_id], seen
            other_job = theirs.id if one is agent else mine.id
            assert one.api.job(other_job) is None, f"{seen} {other_job}"
            containers = probes.crun(lab_host, one).running()
            assert [c.split(".")[0] for c in containers] == [alloc], (one.crun_root, containers)
            assert probes.file(lab_host, probes.alloc_dir(one, alloc)).exists
            assert not probes.file(lab_host, probes.alloc_dir(other, alloc)).exists
        assert agent.node_id != peer.node_id
        assert (agent.dir, agent.unit, agent.crun_root) != (peer.dir, peer.unit, peer.crun_root)
        assert set(agent.ports.values()).isdisjoint(peer.ports.values())

        theirs.stop()
        assert peer.drain() == []
        assert peer.stop() == []
        started = False
        assert not lab_host.exists(peer.dir) and not probes.unit_active(lab_host, peer.unit)
        assert mine.task_state()["State"] == "running", mine.event_types()
        assert list(probes.crun(lab_host, agent).running())[0].startswith(my_alloc)
    finally:
        if started:
            peer.drain()
            peer.stop(check=False)
    mine.stop()
    mine.wait_dead()


# -- cleanup after Ctrl-C -------------------------------------------------------------------
@pytest.mark.slow
def test_run_interrupted_with_ctrl_c_cleans_up_after_itself(inner_runs, lab_host, lab_config):
    """A pytest run is interrupted with Ctrl-C (SIGINT to its process group) while its job's
    container runs: pytest reports the interrupt and still tears its fixtures down, so the
    lab host is left with no agent, container, java process, cgroup, mount or data dir."""
    inner = inner_runs(LONG_JOB_TEST)
    job_id, agent_id = inner.wait_marker(inner_budget(lab_config))
    running = janitor.scan(lab_host)
    assert running.get("container") and any(agent_id in u for u in running.get("unit", [])), \
        f"the job should be running before the interrupt: {janitor.describe(running)}"

    inner.interrupt(signal.SIGINT)
    rc = inner.wait(inner_budget(lab_config))

    out = inner.output()
    assert rc == pytest.ExitCode.INTERRUPTED and "KeyboardInterrupt" in out, out[-3000:]
    left = janitor.scan(lab_host)
    assert left == {}, f"left after Ctrl-C: {janitor.describe(left)}\n{out[-2000:]}"


NEXT_RUN_TEST = '''
def test_next_run(lab_host):
    pass
'''


@pytest.mark.slow
def test_run_killed_hard_leaves_traces_that_the_next_run_sweeps(inner_runs, lab_host,
                                                                 lab_config):
    """When an interrupted run cannot tear down (killed: a second Ctrl-C, a cancelled CI job),
    its agent and container stay on the lab host; the next run sweeps them before it starts,
    says what it swept, and leaves the host clean."""
    inner = inner_runs(LONG_JOB_TEST)
    job_id, agent_id = inner.wait_marker(inner_budget(lab_config))

    inner.interrupt(signal.SIGKILL)
    inner.wait(lab_config.timeout("command"))
    left = janitor.scan(lab_host)
    assert left.get("container") and any(agent_id in u for u in left.get("unit", [])), \
        f"a killed run should leave its agent and container: {janitor.describe(left)}"

    following = inner_runs(NEXT_RUN_TEST)
    rc = following.wait(inner_budget(lab_config))

    out = following.output()
    assert rc == 0, out[-3000:]
    assert "swept leftovers of an earlier run" in out and agent_id in out, out[-3000:]
    assert janitor.scan(lab_host) == {}


# -- dynamic ports --------------------------------------------------------------------------
@pytest.fixture
def usual_nomad_ports_taken(lab_host, lab_config):
    """Listeners on 4646-4648 (all addresses) inside the lab host for the whole test."""
    with probes.occupy_ports(lab_host, USUAL_NOMAD_PORTS, f"lab-ports-{lab_config.run_id}",
                             lab_config.timeout("command")) as unit:
        yield unit


def holders(lab_host, ports) -> set[str]:
    """Names of the processes listening on `ports` (TCP) in the lab host."""
    return set().union(*probes.listeners(lab_host, ports).values())


@pytest.mark.exclusive
@pytest.mark.usefixtures("usual_nomad_ports_taken")  # set up before `agent`
def test_agent_starts_when_its_usual_ports_are_occupied(agent, jobs, lab_host):
    """With 4646-4648 taken inside the lab host, the test's agent still starts on ports the
    lab picked free, listens on them, and runs a job; the squatter is undisturbed."""
    assert set(agent.ports.values()).isdisjoint(USUAL_NOMAD_PORTS), agent.ports
    assert len(set(agent.ports.values())) == 3, agent.ports
    run = jobs.run("hello")
    run.wait_dead()
    assert run.exit_codes() == [0], run.event_types()
    assert holders(lab_host, USUAL_NOMAD_PORTS) == {"systemd-socket"}
    assert holders(lab_host, [agent.ports["http"], agent.ports["rpc"]]) == {"nomad"}


# -- diagnostics bundle ---------------------------------------------------------------------
FAILING_TEST = '''
def test_fails_while_a_job_runs(jobs):
    run = jobs.run("sleeper")
    run.wait_log("sleeper started")
    assert run.id == "a failure on purpose", "LAB-E2E-PURPOSEFUL-FAILURE"
'''


@pytest.mark.slow
def test_failing_test_produces_a_diagnostics_bundle_with_every_part(pytester, monkeypatch,
                                                                    lab_host, lab_config):
    """A test failing while its job runs (in a pytester subprocess) gets reports/diag/<test>/
    with the agent log, plugin log, allocations with events, the task's stdout and stderr,
    crun list and state, the task's cgroup files, dmesg and the leftovers
    scan, and a "lab diagnostics" summary in its report; its agent is still cleaned up."""
    for key, value in inner_env(lab_config, lab_host).items():
        monkeypatch.setenv(key, value)
    module = f"test_diag_{lab_config.run_id}_{secrets.token_hex(2)}"
    pytester.makepyfile(**{module: FAILING_TEST})
    bundle = diag.bundle_dir(lab_config.reports_dir, f"{module}.py::test_fails_while_a_job_runs")

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider",
                                           timeout=inner_budget(lab_config))
    try:
        out = result.stdout.str()
        result.assert_outcomes(failed=1)
        assert "LAB-E2E-PURPOSEFUL-FAILURE" in out and "lab diagnostics" in out, out[-3000:]
        assert f"diagnostics bundle: {bundle}" in out, out[-3000:]

        parts = {p.name: p.read_text(errors="replace") for p in bundle.iterdir()}
        expected = set(diag.PARTS)
        assert expected <= set(parts), f"missing: {expected - set(parts)}"
        stdout = [n for n in parts if n.startswith("task-") and n.endswith("-app.stdout")]
        stderr = [n for n in parts if n.startswith("task-") and n.endswith("-app.stderr")]
        assert len(stdout) == len(stderr) == 1, sorted(parts)
        assert "sleeper started" in parts[stdout[0]]
        assert "Started" in parts["allocations.json"] and "java-crun" in parts["agent.log"]
        alloc8 = stdout[0].split("-")[1]  # task-<alloc id[:8]>-app.stdout
        assert "running" in parts["crun.txt"], parts["crun.txt"]
        assert alloc8 in parts["cgroups.txt"] and "memory.max:" in parts["cgroups.txt"], \
            parts["cgroups.txt"]
        assert parts["dmesg.txt"].strip()
        assert '"container"' in parts["leftovers.json"], parts["leftovers.json"]
        assert "could not collect" not in "".join(parts.values())
        assert janitor.scan(lab_host) == {}
    except BaseException:
        print(f"inner run's bundle kept for inspection: {bundle}")
        raise
    shutil.rmtree(bundle, ignore_errors=True)  # ours: the outer run's reports stay clean


# -- environment recorded -------------------------------------------------------------------
FACTS_TEST = '''
def test_facts(lab_facts):
    assert lab_facts
'''


def test_junit_report_records_box_kernel_cgroup_crun_java_nomad(pytester, monkeypatch,
                                                                lab_host, lab_config):
    """A run's JUnit XML carries the environment as testsuite properties (box hash, kernel,
    cgroup mode, crun, Java, Nomad), matching what the lab host itself reports, and the
    terminal summary prints it."""
    for key, value in inner_env(lab_config, lab_host).items():
        monkeypatch.setenv(key, value)
    pytester.makepyfile(test_facts=FACTS_TEST)
    junit = pytester.path / "junit.xml"

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--junitxml={junit}",
                                           timeout=inner_budget(lab_config))
    result.assert_outcomes(passed=1)

    props = {p.get("name"): p.get("value") for p in ET.parse(junit).iter("property")}
    wanted = ("box", "kernel", "cgroup_mode", "crun", "java", "nomad")
    assert all(props.get(k) for k in wanted), props
    assert props["kernel"] == probes.kernel_release(lab_host)
    assert props["cgroup_mode"] == "v2"
    assert props["crun"].startswith("crun version ")
    assert "version" in props["java"] and props["nomad"].startswith("Nomad v1.11")
    box = json.loads(lab_host.read_file("/etc/nomad-lab-box.json"))  # written by the box build
    assert box["box_hash"] in props["box"], (props["box"], box)
    assert "lab environment" in result.stdout.str()


# -- CI -------------------------------------------------------------------------------------
def test_ci_entry_point_runs_the_whole_suite_without_manual_setup():
    """.ci/run is what CI executes on a fresh clone: strict bash, the README's one command
    (`./invoke check.all`), which bootstraps its own venv and runs lint, unit tests, lab.up,
    the driver-harness tests, this e2e suite, and a subset of it on a second lab."""
    ci = ROOT / ".ci" / "run"
    assert ci.is_file() and os.access(ci, os.X_OK), f"{ci} must exist and be executable"
    script = ci.read_text()
    assert script.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in script
    assert "./invoke check.all" in script
    started = time.monotonic()
    shown = subprocess.run([str(ROOT / "invoke"), "--list"], capture_output=True, text=True,
                           timeout=300, cwd=ROOT)
    assert shown.returncode == 0, shown.stderr
    for task in ("check.all", "lab.up", "test.e2e", "plugin.test"):
        assert task in shown.stdout, shown.stdout
    assert time.monotonic() - started < 300
    # The steps as the CI command itself lists them (--dry-run runs nothing): removing one
    # from tasks.py fails here.
    listed = subprocess.run([str(ROOT / "invoke"), "check.all", "--dry-run"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    steps = [line.split(": ", 1)[1] for line in listed.stdout.splitlines()
             if line.startswith("check.all: ")]
    assert steps == ["check.lint", "plugin.unit", "lab.up", "test.unit", "plugin.test",
                     "test.e2e", "matrix (bullseye: a subset)"], listed.stdout


# -- the lab host's lease ------------------------------------------------------------------
def test_lab_up_during_a_test_run_waits_for_the_lease_instead_of_sweeping_the_runs_agent(
        jobs, agent, lab_host, lab_config):
    """`./invoke lab.up` started while this run holds the lab host (its verify step would
    sweep every agent) waits for the lease, names this run as the holder, and gives up at
    its deadline; this test's agent and its running job are untouched."""
    run = jobs.run("sleeper", args=["forever"])
    run.wait_running()
    env = {k: v for k, v in os.environ.items() if k not in ("LAB_LEASE", "PYTEST_ADDOPTS")}
    # 10 s of waiting, unscaled: long enough to see it wait, short enough for the suite.
    env.update(LAB_TIMEOUT_LEASE="10", LAB_TIMEOUT_SCALE="1", LAB_TARGET=lab_config.target)
    started = time.monotonic()
    other = subprocess.run([str(ROOT / "invoke"), "lab.up"], capture_output=True, text=True,
                           env=env, cwd=ROOT, timeout=lab_config.timeout("command") * 3)
    out = other.stdout + other.stderr
    assert other.returncode != 0, out[-3000:]
    # The holder named is this run: the lab host's record of it carries this run's token,
    # and its command (this session, or what started it and shares its lease: `invoke test`,
    # `invoke matrix`) is the one the waiting lab.up names.
    assert "is leased by another run" in out, out[-3000:]
    held_by = lease.holder(lab_host)
    assert f"token={os.environ[lease.LEASE_ENV]} " in held_by, held_by
    command = re.search(r"command=('[^']*'|\"[^\"]*\")", held_by)
    assert command and f"({command[0]} " in out, (held_by, out[-3000:])
    assert "timed out after 10.0s waiting for the lease of lab host" in out, out[-3000:]
    assert "swept" not in out, out[-3000:]
    assert time.monotonic() - started >= 10
    assert run.task_state()["State"] == "running", run.event_types()
    agent.api.node(agent.node_id)  # the agent still answers
    assert probes.unit_active(lab_host, agent.unit)


# -- Ctrl-C in a terminal on `./invoke test` --------------------------------------------------
class TerminalRun:
    """`./invoke test ...` on a pseudo-terminal of its own, as a person runs it: Ctrl-C is the
    byte 0x03 typed there, which the terminal turns into SIGINT for its foreground group."""

    def __init__(self, tmp_path: Path, env: dict[str, str], args: list[str]):
        import pty

        self.log = tmp_path / "terminal.log"
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: a new session whose controlling terminal is the pty
            _default_sigint()  # as a terminal's shell gives its foreground job
            os.chdir(ROOT)
            os.execve(str(ROOT / "invoke"), [str(ROOT / "invoke"), *args], env)
        self._reader = __import__("threading").Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with self.log.open("wb") as out:
            while True:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    return
                if not chunk:
                    return
                out.write(chunk)
                out.flush()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def ctrl_c(self) -> None:
        os.write(self.fd, b"\x03")

    def kill(self) -> None:
        try:
            if os.waitpid(self.pid, os.WNOHANG) == (0, 0):
                os.killpg(os.getpgid(self.pid), signal.SIGKILL)
                os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._reader.join(timeout=5)
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.2)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"`./invoke test` still running {timeout:.0f}s after Ctrl-C; "
                             f"killed. Output:\n{self.output()[-3000:]}")


@pytest.mark.exclusive
@pytest.mark.slow
def test_ctrl_c_in_a_terminal_on_invoke_test_tears_down_and_prints_the_summary(
        tmp_path, lab_host, lab_config):
    """A person runs `./invoke test` in a terminal and presses Ctrl-C while a job runs: pytest
    (under invoke) gets the interrupt, stops the test, drains and stops its agent, prints its
    summary, and the lab host is left with nothing of it."""
    test_file = tmp_path / "test_inner_terminal.py"
    test_file.write_text(LONG_JOB_TEST)
    marker = tmp_path / "job-running"
    env = {**inner_env(lab_config, lab_host), "LAB_E2E_MARKER": str(marker), "TERM": "dumb"}
    run = TerminalRun(tmp_path, env, ["test", "-k", "test_long_job", "--extra",
                                      f"{test_file} -p no:cacheprovider -s"])
    try:
        until(lambda: marker.exists() and marker.read_text().split() or Pending(
            run.output().strip().splitlines()[-1:] or "no output yet"),
            inner_budget(lab_config), "the terminal run's job running")
        job_id, agent_id = marker.read_text().split()
        running = janitor.scan(lab_host)
        assert any(agent_id in u for u in running.get("unit", [])), janitor.describe(running)

        run.ctrl_c()
        rc = run.wait(inner_budget(lab_config))
        left = janitor.scan(lab_host)  # before the clean-up below can hide anything
    finally:
        run.kill()
        if janitor.scan(lab_host):
            janitor.sweep(lab_host)  # a failure here must not spill into the next tests
    out = run.output()
    assert rc != 0, out[-3000:]
    assert "KeyboardInterrupt" in out, out[-3000:]
    # pytest's closing line, e.g. "=== 53 deselected in 48.75s ===" (an interrupted test is
    # not counted in it).
    assert re.search(r"^=+ .+ in [\d.]+s(?: \([\d:]+\))? =+\s*$", out, re.M), \
        f"pytest printed no summary:\n{out[-3000:]}"
    assert left == {}, f"left after Ctrl-C in a terminal: {janitor.describe(left)}\n{out[-2000:]}"
