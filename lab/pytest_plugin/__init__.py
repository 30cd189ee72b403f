"""pytest plugin: options, fixtures, markers and report hooks for the lab's e2e suite.

Fixtures (what a test uses):
  lab_config  LabConfig for this run            lab_host   LabHost (session)
  lab_facts   environment facts (session)       jars       built test JARs by name
  artifacts   HTTP artifact server exposed into the lab host (session)
  agent       a fresh NomadAgent for this test  api        LabApi bound to it
  jobs        build and submit java-crun jobs: jobs.run("hello", args=[...]) -> JobRun
Every test that uses `agent` is checked for leftovers on the lab host afterwards. Every test
that uses the lab gets a record (lab.checks.record); a failing one (in setup, body or teardown)
gets a diagnostics bundle with its record under reports/diag/ and a summary in its report, and
the run's reports/index.html (lab.checks.report) shows every test with its record.
"""

from __future__ import annotations

import itertools
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from lab.checks import (
    diag,
    durations,
    facts,
    janitor,
    leftovers,
    record,
    recording,
    teardown,
)
from lab.checks.testjobs import Jobs
from lab.core.config import LabConfig
from lab.core.errors import LabError
from lab.nomad.agent import AgentOptions, NomadAgent
from lab.nomad.agent_pool import AgentPool
from lab.pytest_plugin import guest, keys, reporting
from lab.pytest_plugin.guest import guest_guard, guest_watched  # noqa: F401 - fixtures
from lab.pytest_plugin.kernel_gate import kernel_health  # noqa: F401 - an autouse fixture

_agent_seq = itertools.count(1)


def pytest_addoption(parser):
    group = parser.getgroup("lab", "java-crun e2e lab")
    group.addoption("--lab-target", action="append", default=None,
                    help="vagrant (default) or ssh://user@host[:port]; env LAB_TARGET. More "
                    "than once (or LAB_TARGETS=a,b): several lab hosts, each xdist worker "
                    "bound to one")
    group.addoption("--lab-ssh-key", default=None, help="private key for an ssh:// target")
    group.addoption("--lab-timeout-scale", default=None,
                    help="multiply every timeout (default auto: larger under TCG)")
    group.addoption("--lab-keep", action="store_true", default=None,
                    help="keep a failed test's agent and data dir on the lab host to debug")
    group.addoption("--lab-reports", default=None, metavar="DIR",
                    help="where diagnostics bundles and index.html go (default: the checkout's "
                    "reports/); given, every test is recorded, not only those using the lab")
    group.addoption("--lab-report-id", default=None, metavar="ID",
                    help="pytest runs given one id make one index.html (default: the run id)")


def pytest_configure(config):
    config.addinivalue_line("markers", "agent(**options): options for this test's Nomad agent "
                            "(artifact={...} client artifact block, fingerprint_period=..., "
                            "persist=True for a client that keeps its state across restarts)")
    config.addinivalue_line("markers", "kernel_problems_expected(*kinds): kernel problems of "
                            "these kinds (lab/checks/kernel_log.py PROBLEMS) in the test's span "
                            "are its purpose: recorded, not failed")
    config.addinivalue_line("markers", f"{guest.RESTART_EXPECTED}: the test restarts the lab "
                            "host on purpose (an inner run whose guest panics): the loss is "
                            "recorded, not failed, and the run waits for the host to come back")
    config.addinivalue_line("markers", "exclusive: the test changes the lab host for everybody "
                            "(faults, plugin kill, agent restart, inner runs): nothing else "
                            "runs on that host meanwhile, not even the next test's agent")
    _refuse_fewer_workers_than_hosts(config)
    if getattr(config.option, "numprocesses", None) and not keys.worker():
        # One test at a time after the first two (lab.checks.durations.for_workers).
        if getattr(config.option, "maxschedchunk", None) is None:
            config.option.maxschedchunk = 1
    if not keys.worker():
        config.stash[keys.REPORTING_KEY] = reporting.Reporting(config)
        config.pluginmanager.register(config.stash[keys.REPORTING_KEY], "lab-reporting")


def _refuse_fewer_workers_than_hosts(config) -> None:
    """Each xdist worker is bound to one lab host: a host without a worker would not be used."""
    if keys.worker() or not any("e2e" in str(arg) for arg in config.args):
        return  # a run of the unit tests uses no lab host
    try:
        hosts = keys.lab_config(config).target_list
    except LabError:
        return  # the header says what is wrong with the configuration
    workers = getattr(config.option, "numprocesses", None) or 0
    if len(hosts) > 1 and isinstance(workers, int) and workers < len(hosts):
        raise pytest.UsageError(
            f"{len(hosts)} lab hosts (--lab-target, LAB_TARGETS) need at least as many xdist "
            f"workers, each bound to one: add `-n {len(hosts)}` (or `-n auto`); "
            "`./invoke test` does it")


def pytest_collection_modifyitems(config, items):
    budget = None
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if keys.EXCLUSIVE_FIXTURES & names:
            item.add_marker(pytest.mark.exclusive)
        if "lab_host" in names and item.get_closest_marker("timeout") is None:
            # pytest-timeout: no e2e test may hang the run; the bound follows the lab's
            # (scaled) timeouts: an agent, four jobs' worth of waiting and three teardowns.
            if budget is None:
                lab = keys.lab_config(config)
                budget = (lab.timeout("agent_ready") + 4 * lab.timeout("job")
                          + 3 * lab.timeout("agent_stop"))
            item.add_marker(pytest.mark.timeout(budget))
    if keys.parallel(config):
        # Tests in parallel share the lab host: the exclusive ones cannot run among them.
        # `./invoke test -n N` runs them alone afterwards, in a serial pass.
        skipped = [item for item in items if is_exclusive(item)]
        if skipped:
            config.hook.pytest_deselected(items=skipped)
            items[:] = [item for item in items if not is_exclusive(item)]
        # Longest first, as recorded by the runs before (lab.checks.durations); every worker
        # gets the controller's copy: one read while a run rewrote the file would collect
        # another order, which xdist refuses.
        workerinput = getattr(config, "workerinput", {})
        recorded = workerinput.get(DURATIONS_INPUT, {})
        items[:] = durations.for_workers(
            durations.longest_first(items, recorded, key=lambda i: i.nodeid),
            int(workerinput.get("workercount", 1)))


DURATIONS_INPUT = "lab_durations"  # the recorded durations, from the controller to its workers


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist controller: hand each worker the recorded durations (read once, here)."""
    config = node.config
    if keys.DURATIONS_KEY not in config.stash:
        config.stash[keys.DURATIONS_KEY] = durations.load(reporting.durations_file(config))
    node.workerinput[DURATIONS_INPUT] = config.stash[keys.DURATIONS_KEY]


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """An xdist controller of an e2e run holds the lab host's lease, checks the build and
    sweeps once, before its workers start: they inherit the lease and must not sweep (each
    would remove the others' agents)."""
    global _terminal
    config = session.config
    _terminal = config.pluginmanager.get_plugin("terminalreporter")
    if keys.worker() or not getattr(config.option, "numprocesses", None):
        return
    if not any("e2e" in str(arg) for arg in config.args):
        return
    from lab.provision import target

    lab_config = keys.lab_config(config)
    stack = ExitStack()
    config.stash[keys.CONTROLLER_KEY] = stack
    # Every lab host of the run, one after another: its lease (the workers share it), its
    # build check and sweep. No separate check for the binaries: the stale check finds a
    # missing one too. The terminal's environment is the first host's.
    for one in reversed(lab_config.target_list):
        host_config = lab_config.for_target(one)
        host = stack.enter_context(target.leased(host_config, "pytest -n (xdist controller)"))
        config.stash[keys.FACTS_KEY] = _start_the_run(host, host_config)


def _start_the_run(host, lab_config: LabConfig) -> dict[str, str]:
    """Before the first test, in one round trip (its parts at once): refuse a lab host that
    does not run this tree's build, heal what a crashed run left (Jepsen's teardown before
    setup), and read the environment's facts, which the run's reports carry."""
    from lab.provision import push
    from lab.remote import batch

    results = batch.run_together(host, {
        "files": push.sums_command(push.remote_paths(lab_config)),
        "leftovers": janitor.scan_script(),
        "facts": facts.FACTS_SCRIPT,
    })
    _refuse_a_stale_lab_host(host, lab_config, push.parse_sums(results["files"].stdout))
    swept = janitor.parse_scan(results["leftovers"].stdout)
    if swept:
        janitor.sweep(host)
        print(f"\nlab: swept leftovers of an earlier run:\n{leftovers.describe_text(swept)}")
    return facts.parse(host, results["facts"].stdout)


def _fault_scan_state(config) -> dict:
    return config.stash.setdefault(keys.FAULT_SCAN_KEY, {"since": 0.0, "exclusive": False})


def is_exclusive(item) -> bool:
    return item.get_closest_marker("exclusive") is not None


def agent_options(item) -> AgentOptions:
    marker = item.get_closest_marker("agent")
    return AgentOptions(**(marker.kwargs if marker else {}))


@pytest.fixture(scope="session")
def lab_config(pytestconfig) -> LabConfig:
    return keys.lab_config(pytestconfig)


@pytest.fixture(scope="session")
def lab_host(pytestconfig, lab_config):
    from lab.provision import target

    # A worker's controller checked the build; elsewhere the stale check below finds a
    # missing binary too (one SSH round trip, ~1 s under TCG, instead of two).
    with target.leased(lab_config, f"pytest {' '.join(sys.argv[1:])}"[:120],
                       check_ready=bool(keys.worker())) as host:
        pytestconfig.stash[keys.HOST_KEY] = host
        if not keys.worker():  # the xdist controller did it for its workers
            pytestconfig.stash[keys.FACTS_KEY] = _start_the_run(host, lab_config)
        yield host
        host.close()


def _refuse_a_stale_lab_host(host, config: LabConfig, read=None) -> None:
    """Never test a plugin or Nomad other than this tree's build."""
    from lab.provision.push import NOT_ON_HOST, stale
    from lab.remote.layout import NOMAD_BIN, PLUGIN_BINARY, PLUGIN_DIR

    differs = stale(host, config, read)
    if not differs:
        return
    if any(line.startswith((f"{NOMAD_BIN} ", f"{PLUGIN_DIR}/{PLUGIN_BINARY} ")) and
           NOT_ON_HOST in line for line in differs):
        fix = ("Nomad or the plugin is not there at all: the lab host was never brought up (or "
               "was reset): run `./invoke lab.up`")
    else:
        fix = ("`./invoke test` builds and pushes before it runs pytest; or run "
               "`./invoke plugin.build lab.push` first")
    raise LabError(f"the lab host {host.spec.url} does not run this tree's build:\n  "
                   + "\n  ".join(differs) + f"\nfix: {fix}")


@pytest.fixture(scope="session")
def lab_facts(request, lab_host, record_testsuite_property) -> dict[str, str]:
    # Read with the run's first checks (_start_the_run); an xdist worker reads its own.
    found = request.config.stash.get(keys.FACTS_KEY, None) or facts.collect(lab_host)
    request.config.stash[keys.FACTS_KEY] = found
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
    made = request.config.stash.setdefault(keys.MADE_KEY, {})

    def make(options: AgentOptions) -> NomadAgent:
        agent = NomadAgent(lab_host, lab_config.run_id, next(_agent_seq),
                           ready_timeout=lab_config.timeout("agent_ready"),
                           stop_timeout=lab_config.timeout("agent_stop"), options=options)
        made[request.config.stash.get(keys.MAKING_KEY, "")] = agent
        return agent

    pool = AgentPool(make)
    request.config.stash[keys.POOL_KEY] = pool
    request.getfixturevalue("guest_guard").pool = pool
    yield pool
    del request.config.stash[keys.POOL_KEY]
    pool.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    item.stash[keys.NEXT_KEY] = nextitem
    if is_exclusive(item):
        _fault_scan_state(item.config)["exclusive"] = True
    if item.config.getoption("--lab-reports") or "lab_host" in item.fixturenames:
        item.stash[keys.RECORD_KEY] = record.Record(item.nodeid,
                                                    lab="lab_host" in item.fixturenames)
    yield


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    """As the test body begins, start the next test's agent, unless either test is exclusive
    (a fault would hit the other agent; a test may need its agent started after its own
    set-up, like the occupied-ports one)."""
    pool = item.config.stash.get(keys.POOL_KEY, None)
    nxt = item.stash.get(keys.NEXT_KEY, None)
    if (pool is not None and nxt is not None and "agent" in nxt.fixturenames
            and not is_exclusive(item) and not is_exclusive(nxt)
            and keys.lab_config(item.config).agents_ahead):
        item.config.stash[keys.MAKING_KEY] = nxt.nodeid
        pool.start_ahead(nxt.nodeid, agent_options(nxt))


@pytest.fixture
def agent(request, lab_config, lab_host, lab_facts, agent_pool):
    item = request.node
    rec = item.stash.setdefault(keys.RECORD_KEY, record.Record(item.nodeid, lab=True))
    rec.phases = item.stash.setdefault(keys.PHASES_KEY, [])
    request.config.stash[keys.MAKING_KEY] = item.nodeid
    agent, waited = recording.take_agent(agent_pool, item.nodeid, agent_options(item), rec,
                                         request.config.stash.setdefault(keys.MADE_KEY, {}))
    props = item.user_properties
    props.append(("agent_wait_s", round(waited, 2)))
    props.append(("agent_startup_s", round(agent.startup_seconds, 2)))
    props.append(("agent_timeline", " ".join(f"{k}={v:.2f}" for k, v in agent.timeline.items())))
    yield agent
    failed = getattr(item, "_lab_call_failed", False)
    if lab_host.lost:
        # Nothing to drain, stop or scan: the lab host restarts with nothing running.
        agent.close_tunnel()
        rec.errors["teardown"] = "skipped: the lab host was lost during the test"
        return
    if failed and lab_config.keep:
        # Keep it, and stop the session: the next test would find it as its own leftover.
        agent.close_tunnel()
        request.session.shouldstop = f"--lab-keep: kept agent {agent.id} of a failed test"
        _terminal_line(diag.keep_instructions(agent, lab_host))
        return
    faults = _fault_scan_state(request.config)
    scan_began = time.time()
    problems = teardown.agent_teardown(
        agent, lab_host, agent_pool, rec, lambda a: _bundle(item, rec, a),
        own_traces_only=bool(keys.worker()), jobs=item.funcargs.get("jobs"),
        unjournaled_faults=faults["exclusive"], faults_since=faults["since"])
    faults.update(since=scan_began, exclusive=False)
    if problems and not failed:
        pytest.fail("\n".join(problems), pytrace=False)


def _terminal_line(text: str) -> None:
    if _terminal is not None:
        _terminal.write_line("")
        _terminal.write_line(text)
    else:
        print(text)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    yield
    guard = item.config.stash.get(keys.GUARD_KEY, None)
    if guard is not None:
        stop = guard.end(item)
        if stop:
            item.session.shouldstop = stop
            _terminal_line(f"lab: {stop}")
    phases = item.stash.get(keys.PHASES_KEY, None)
    if phases:
        _phases_of[item.nodeid] = phases
        item.user_properties.append(("phases", " ".join(f"{n.replace(' ', '_')}={s:.2f}"
                                                          for n, s in phases)))


_phases_of: dict[str, list] = {}
_terminal = None


@pytest.fixture
def api(agent):
    return agent.api


@pytest.fixture
def jobs(request, agent, artifacts, lab_config) -> Jobs:
    return Jobs(request.node.name, agent, artifacts, lab_config,
                diag.bundle_dir(keys.reports_dir(request.config), request.node.nodeid))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    _expected_failure_is_the_body_only(rep, call)
    rec = item.stash.get(keys.RECORD_KEY, None)
    if rec is None:
        return
    guard = item.config.stash.get(keys.GUARD_KEY, None)
    loss = guard.loss_of(item) if guard is not None and rep.when == "teardown" else None
    if loss is not None and not item.get_closest_marker(guest.RESTART_EXPECTED):
        rec.lost, rec.serial = loss.describe(), "\n".join(loss.serial) + "\n"
        if not rec.failed:  # nothing in the test noticed (the loss came in its teardown)
            rep.outcome, rep.longrepr = "failed", guest.loss_report(loss)
        else:
            rep.sections.append(("lab host lost", guest.loss_report(loss)))
    rec.add_report(rep.when, rep.outcome, rep.duration, rep.longreprtext if rep.failed else "")
    funcargs = getattr(item, "funcargs", None) or {}
    if rep.failed and rep.when == "call":
        item._lab_call_failed = True
    if rep.failed and rep.when in ("setup", "call"):
        # In the body the agent is still up; in setup, whatever the host shows.
        rep.sections.append(("lab diagnostics", recording.summary(
            _bundle(item, rec, funcargs.get("agent")))))
    if rep.when == "teardown":
        out = diag.bundle_dir(keys.reports_dir(item.config), item.nodeid)
        sections = recording.finish(rec, out, funcargs.get("artifacts"))
        rep.sections.extend(sections if rep.failed else [])
        # For the process that writes index.html (an xdist controller gets them serialized).
        rep.lab_record = rec.to_dict()
        rep.lab_env = recording.environment(lambda: keys.lab_config(item.config), keys.worker(),
                                            item.config.stash.get(keys.FACTS_KEY, None))


def _expected_failure_is_the_body_only(rep, call) -> None:
    """An xfail marker names a known bug of the body. pytest also turns an exception in set-up
    or teardown into "xfailed": an agent that never started would pass for the bug, and the
    leftovers the teardown found would be hidden. Those stay errors (an imperative
    `pytest.xfail()` in a fixture stays what it says)."""
    if (rep.when != "call" and hasattr(rep, "wasxfail") and call.excinfo is not None
            and not call.excinfo.errisinstance(pytest.xfail.Exception)):
        rep.outcome = "failed"
        del rep.wasxfail


def _bundle(item, rec: record.Record, agent) -> Path:
    return recording.bundle(rec, diag.bundle_dir(keys.reports_dir(item.config), item.nodeid),
                            item.config.stash.get(keys.HOST_KEY, None), agent)


def pytest_runtest_logreport(report):
    """With -v, one line per test after its teardown: each phase and how long it took."""
    if report.when != "teardown":
        return
    phases = _phases_of.pop(report.nodeid, None)
    if phases and _terminal and _terminal.verbosity > 0:
        _terminal.write_line("    phases: " + " | ".join(f"{name} {secs:.1f}s"
                                                       for name, secs in phases))


def pytest_sessionfinish(session):
    stack = session.config.stash.get(keys.CONTROLLER_KEY, None)
    if stack is not None:
        stack.close()


def pytest_terminal_summary(terminalreporter, config):
    found = config.stash.get(keys.FACTS_KEY, None)
    if found:
        terminalreporter.write_sep("-", "lab environment")
        terminalreporter.write_line(facts.render(found))
    guard = config.stash.get(keys.GUARD_KEY, None)
    if guard is not None:
        terminalreporter.write_line(guard.summary())
    reporting = config.stash.get(keys.REPORTING_KEY, None)
    if reporting is not None and (reporting.run.written or reporting.run.error):
        terminalreporter.write_line(reporting.run.error or f"lab report: {reporting.run.written}")


def pytest_report_header(config):
    try:
        cfg = keys.lab_config(config)
    except LabError as exc:
        return f"lab: configuration error: {exc}"
    return (f"lab: target={cfg.target} timeout_scale={cfg.scale:g} run_id={cfg.run_id} "
            f"(accel {cfg.effective_accel()})")
