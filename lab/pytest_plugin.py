"""pytest plugin: options, fixtures, markers and report hooks for the lab's e2e suite.

Fixtures (what a test uses):
  lab_config  LabConfig for this run            lab_host   LabHost (session)
  lab_facts   environment facts (session)       jars       built test JARs by name
  artifacts   HTTP artifact server exposed into the lab host (session)
  agent       a fresh NomadAgent for this test  api        LabApi bound to it
  jobs        build and submit java-crun jobs: jobs.run("hello", args=[...]) -> JobRun
Every test that uses `agent` is checked for leftovers on the lab host afterwards, and a
failing one gets a diagnostics bundle under reports/diag/ with a summary in its report.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from lab.checks import diag, facts, janitor
from lab.core.config import LabConfig
from lab.core.errors import LabError
from lab.nomad.agent import AgentOptions, NomadAgent
from lab.nomad.agent_pool import AgentPool
from lab.nomad.jobrun import JobRun

_agent_seq = itertools.count(1)
_FACTS_KEY = pytest.StashKey[dict]()
_POOL_KEY = pytest.StashKey[AgentPool]()
_NEXT_KEY = pytest.StashKey[pytest.Item | None]()
_CONTROLLER_KEY = pytest.StashKey[ExitStack]()
_LAB_CONFIG_KEY = pytest.StashKey[LabConfig]()
_PHASES_KEY = pytest.StashKey[list]()  # [(phase, seconds)] of one test, shown with -v
# Fixtures whose tests change the lab host for everybody: an inner pytest session sweeps the
# host when it starts, so nothing else may run there meanwhile.
_EXCLUSIVE_FIXTURES = {"inner_runs", "pytester"}


def pytest_addoption(parser):
    group = parser.getgroup("lab", "java-crun e2e lab")
    group.addoption("--lab-target", default=None,
                    help="vagrant (default) or ssh://user@host[:port]; env LAB_TARGET")
    group.addoption("--lab-ssh-key", default=None, help="private key for an ssh:// target")
    group.addoption("--lab-timeout-scale", default=None,
                    help="multiply every timeout (default auto: larger under TCG)")
    group.addoption("--lab-keep", action="store_true", default=None,
                    help="keep a failed test's agent and data dir on the lab host to debug")


def pytest_configure(config):
    config.addinivalue_line("markers", "agent(**options): options for this test's Nomad agent "
                            "(artifact={...} client artifact block, fingerprint_period=..., "
                            "persist=True for a client that keeps its state across restarts)")
    config.addinivalue_line("markers", "exclusive: the test changes the lab host for everybody "
                            "(faults, plugin kill, agent restart, inner runs): nothing else "
                            "runs on that host meanwhile, not even the next test's agent")


def pytest_collection_modifyitems(config, items):
    budget = None
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if _EXCLUSIVE_FIXTURES & names:
            item.add_marker(pytest.mark.exclusive)
        if "lab_host" in names and item.get_closest_marker("timeout") is None:
            # pytest-timeout: no e2e test may hang the run; the bound follows the lab's
            # (scaled) timeouts: an agent, four jobs' worth of waiting and three teardowns.
            if budget is None:
                lab = _lab_config(config)
                budget = (lab.timeout("agent_ready") + 4 * lab.timeout("job")
                          + 3 * lab.timeout("agent_stop"))
            item.add_marker(pytest.mark.timeout(budget))
    if _parallel(config):
        # Tests in parallel share the lab host: the exclusive ones cannot run among them.
        # `./invoke test -n N` runs them alone afterwards, in a serial pass.
        skipped = [item for item in items if is_exclusive(item)]
        if skipped:
            config.hook.pytest_deselected(items=skipped)
            items[:] = [item for item in items if not is_exclusive(item)]


def _worker() -> str | None:
    """The xdist worker id (gw0, gw1...) when this process is one."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def _parallel(config) -> bool:
    return bool(_worker()) or bool(getattr(config.option, "numprocesses", None))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """An xdist controller of an e2e run holds the lab host's lease, checks the build and
    sweeps once, before its workers start: they inherit the lease and must not sweep (each
    would remove the others' agents)."""
    global _terminal
    config = session.config
    _terminal = config.pluginmanager.get_plugin("terminalreporter")
    if _worker() or not getattr(config.option, "numprocesses", None):
        return
    if not any("e2e" in str(arg) for arg in config.args):
        return
    from lab.provision import target

    lab_config = _lab_config(config)
    stack = ExitStack()
    host = stack.enter_context(target.leased(lab_config, "pytest -n (xdist controller)",
                                             check_ready=True))
    config.stash[_CONTROLLER_KEY] = stack
    _refuse_a_stale_lab_host(host, lab_config)
    _sweep_before_the_run(host)


def pytest_sessionfinish(session):
    stack = session.config.stash.get(_CONTROLLER_KEY, None)
    if stack is not None:
        stack.close()


def _sweep_before_the_run(host) -> None:
    """Heal what a crashed run left before we start (Jepsen's teardown before setup)."""
    swept = janitor.scan(host)
    if swept:
        janitor.sweep(host)
        print(f"\nlab: swept leftovers of an earlier run: {janitor.describe(swept)}")


def is_exclusive(item) -> bool:
    return item.get_closest_marker("exclusive") is not None


def agent_options(item) -> AgentOptions:
    marker = item.get_closest_marker("agent")
    return AgentOptions(**(marker.kwargs if marker else {}))


def _lab_config(config) -> LabConfig:
    """The session's one LabConfig (its run id is the one the header and every agent use)."""
    found = config.stash.get(_LAB_CONFIG_KEY, None)
    if found is None:
        opt = config.getoption
        found = LabConfig.load({"target": opt("--lab-target"), "ssh_key": opt("--lab-ssh-key"),
                                "timeout_scale": opt("--lab-timeout-scale"),
                                "keep": opt("--lab-keep")})
        config.stash[_LAB_CONFIG_KEY] = found
    return found


@pytest.fixture(scope="session")
def lab_config(pytestconfig) -> LabConfig:
    return _lab_config(pytestconfig)


@pytest.fixture(scope="session")
def lab_host(lab_config):
    from lab.provision import target

    with target.leased(lab_config, f"pytest {' '.join(sys.argv[1:])}"[:120],
                       check_ready=True) as host:
        if not _worker():  # the xdist controller did both for its workers
            _refuse_a_stale_lab_host(host, lab_config)
            _sweep_before_the_run(host)
        yield host
        host.close()


def _refuse_a_stale_lab_host(host, config: LabConfig) -> None:
    """Never test a plugin or Nomad other than this tree's build."""
    from lab.provision.push import stale

    differs = stale(host, config)
    if differs:
        raise LabError(f"the lab host {host.spec.url} does not run this tree's build:\n  "
                       + "\n  ".join(differs)
                       + "\nfix: `./invoke test` builds and pushes before it runs pytest; "
                       "or run `./invoke plugin.build lab.push` first")


@pytest.fixture(scope="session")
def lab_facts(request, lab_host, record_testsuite_property) -> dict[str, str]:
    found = facts.collect(lab_host)
    request.config.stash[_FACTS_KEY] = found
    for key, value in found.items():
        record_testsuite_property(key, value)
    return found



@pytest.fixture(scope="session")
def jars(lab_config) -> dict[str, Path]:
    jar_dir = lab_config.build_dir / "jars"
    found = {p.stem: p for p in jar_dir.glob("*.jar")}
    if not found:
        raise LabError(f"no test JARs in {jar_dir}: run `./invoke lab.up` (or `./invoke "
                       "plugin.build`) to build tests/apps")
    return found


@pytest.fixture(scope="session")
def artifacts(lab_host, jars):
    """The artifact server, every test JAR registered, reachable from the lab host."""
    from lab.faults.artifacts import ArtifactServer

    with ArtifactServer() as server:
        for name, path in jars.items():
            server.add(f"{name}.jar", path)
        with server.expose(lab_host) as exposed:
            server.exposed = exposed
            yield server


@pytest.fixture(scope="session")
def agent_pool(request, lab_config, lab_host):
    """Starts each test's agent ahead, while the test before it runs (see lab.nomad.agent_pool)."""
    def make(options: AgentOptions) -> NomadAgent:
        return NomadAgent(lab_host, lab_config.run_id, next(_agent_seq),
                          ready_timeout=lab_config.timeout("agent_ready"),
                          stop_timeout=lab_config.timeout("agent_stop"), options=options)

    pool = AgentPool(make)
    request.config.stash[_POOL_KEY] = pool
    yield pool
    del request.config.stash[_POOL_KEY]
    pool.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    item.stash[_NEXT_KEY] = nextitem
    yield


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    """As the test body begins, start the next test's agent, unless either test is exclusive
    (a fault would hit the other agent; a test may need its agent started after its own
    set-up, like the occupied-ports one)."""
    pool = item.config.stash.get(_POOL_KEY, None)
    nxt = item.stash.get(_NEXT_KEY, None)
    if (pool is not None and nxt is not None and "agent" in nxt.fixturenames
            and not is_exclusive(item) and not is_exclusive(nxt)
            and _lab_config(item.config).agents_ahead):
        pool.start_ahead(nxt.nodeid, agent_options(nxt))


@pytest.fixture
def agent(request, lab_config, lab_host, lab_facts, agent_pool):
    agent, waited = agent_pool.take(request.node.nodeid, agent_options(request.node))
    phases = request.node.stash.setdefault(_PHASES_KEY, [])
    phases.append(("agent ready", waited))
    props = request.node.user_properties
    props.append(("agent_wait_s", round(waited, 2)))
    props.append(("agent_startup_s", round(agent.startup_seconds, 2)))
    props.append(("agent_timeline", " ".join(f"{k}={v:.2f}" for k, v in agent.timeline.items())))
    yield agent
    failed = getattr(request.node, "_lab_call_failed", False)
    if failed and lab_config.keep:
        # Keep it, and stop the session: the next test would find it as its own leftover.
        agent.close_tunnel()
        request.session.shouldstop = f"--lab-keep: kept agent {agent.id} of a failed test"
        _terminal_line(keep_instructions(agent, lab_host))
        return
    jobs = request.node.funcargs.get("jobs")
    for run in getattr(jobs, "runs", []):
        phases.extend((f"job {run.id.rsplit('-', 1)[-1]} {what}", secs)
                      for what, secs in run.milestones)
    with _phase(phases, "drained"):
        problems = agent.drain()
    with _phase(phases, "stopped"):
        agent.stop(check=False, graceful=bool(problems))
    with _phase(phases, "scanned"):
        if _worker():  # other workers' tests run on this host: look at this agent's only
            leftovers = janitor.scan_agent(lab_host, agent.id, agent.api.seen_alloc_ids)
        else:
            leftovers = janitor.scan(lab_host, exclude_agents=agent_pool.live_ids())
    if leftovers:
        agent_pool.drop_ahead()  # the sweep below removes every agent on the host
        janitor.sweep(lab_host)
    problems += [f"left on the lab host after the test: {janitor.describe(leftovers)}"] \
        if leftovers else []
    if problems and not failed:
        pytest.fail("\n".join(problems), pytrace=False)


def keep_instructions(agent: NomadAgent, host) -> str:
    """How to reach a kept agent: its API through an SSH tunnel, its unit, the clean-up."""
    spec = host.spec
    key = f" -i {spec.key_file}" if spec.key_file else ""
    port = agent.ports["http"]
    return "\n".join([
        f"lab: --lab-keep: the failed test's agent {agent.id} is left running; the session "
        "stops here.",
        f"  reach its API:  ssh -N -L {port}:127.0.0.1:{port} -p {spec.port}{key} "
        f"{spec.user}@{spec.host} &",
        f"                  export NOMAD_ADDR=http://127.0.0.1:{port}; nomad status",
        f"  on the lab host (./invoke lab.ssh): unit {agent.unit}, log {agent.log_path}, "
        f"data {agent.dir}",
        "  clean up:       ./invoke lab.clean"])


def _terminal_line(text: str) -> None:
    if _terminal is not None:
        _terminal.write_line("")
        _terminal.write_line(text)
    else:
        print(text)


@contextmanager
def _phase(phases: list, name: str):
    began = time.monotonic()
    try:
        yield
    finally:
        phases.append((name, time.monotonic() - began))


def pytest_runtest_logreport(report):
    """With -v, one line per test after its teardown: each phase and how long it took."""
    if report.when != "teardown":
        return
    phases = _phases_of.pop(report.nodeid, None)
    if phases and _terminal and _terminal.verbosity > 0:
        _terminal.write_line("    phases: " + " | ".join(f"{name} {secs:.1f}s"
                                                       for name, secs in phases))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    yield
    phases = item.stash.get(_PHASES_KEY, None)
    if phases:
        _phases_of[item.nodeid] = phases
        item.user_properties.append(("phases", " ".join(f"{n.replace(' ', '_')}={s:.2f}"
                                                          for n, s in phases)))


_phases_of: dict[str, list] = {}
_terminal = None


@pytest.fixture
def api(agent):
    return agent.api


class Jobs:
    """Build and submit java-crun jobs whose JARs come from the lab's artifact server."""

    def __init__(self, request, agent: NomadAgent, artifacts, config: LabConfig):
        self.request, self.agent, self.artifacts, self.config = request, agent, artifacts, config
        self.runs: list[JobRun] = []

    def jar_url(self, name: str) -> str:
        name = name if name.endswith(".jar") else f"{name}.jar"
        return self.artifacts.exposed.url(name)

    def id(self, suffix: str = "") -> str:
        from lab.nomad.jobs import job_id

        return job_id(self.config.run_id, f"{self.request.node.name}-{suffix}".strip("-"))

    def task(self, jar: str = "hello", name: str = "app", **kwargs) -> dict:
        from lab.nomad.jobs import java_task

        return java_task(name, self.jar_url(jar), **kwargs)

    def job(self, *tasks: dict, job_id: str | None = None, **kwargs) -> dict:
        from lab.nomad.jobs import java_job

        return java_job(job_id or self.id(), list(tasks), **kwargs)

    def submit(self, job: dict) -> JobRun:
        hint = f"diagnostics: {diag.bundle_dir(self.config.reports_dir, self.request.node.nodeid)}"
        run = JobRun(self.agent.api, job, self.config.timeout, diag_hint=hint).submit()
        self.runs.append(run)
        return run

    def run(self, jar: str = "hello", *, job_kwargs: dict | None = None, **task_kwargs) -> JobRun:
        """One task group, one task named 'app' running `jar`; returns the submitted JobRun."""
        return self.submit(self.job(self.task(jar, **task_kwargs), **(job_kwargs or {})))


@pytest.fixture
def jobs(request, agent, artifacts, lab_config) -> Jobs:
    return Jobs(request, agent, artifacts, lab_config)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    item._lab_call_failed = True
    agent = item.funcargs.get("agent") if hasattr(item, "funcargs") else None
    host = item.funcargs.get("lab_host") if hasattr(item, "funcargs") else None
    config: LabConfig | None = item.funcargs.get("lab_config") if host is not None else None
    if host is None or config is None:
        return
    out = diag.bundle_dir(config.reports_dir, item.nodeid)
    started = time.monotonic()
    try:
        diag.collect(host, agent, out)
        rep.sections.append(("lab diagnostics", diag.summary(out) +
                             f"\n(collected in {time.monotonic() - started:.1f}s)"))
    except Exception as exc:  # noqa: BLE001 - diagnostics must never mask the real failure
        rep.sections.append(("lab diagnostics", f"could not collect diagnostics: {exc}"))


def pytest_terminal_summary(terminalreporter, config):
    found = config.stash.get(_FACTS_KEY, None)
    if found:
        terminalreporter.write_sep("-", "lab environment")
        terminalreporter.write_line(facts.render(found))


def pytest_report_header(config):
    try:
        cfg = _lab_config(config)
    except LabError as exc:
        return f"lab: configuration error: {exc}"
    return (f"lab: target={cfg.target} timeout_scale={cfg.scale:g} run_id={cfg.run_id} "
            f"(accel {cfg.effective_accel()})")
