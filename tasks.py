"""Invoke tasks: thin wrappers; the logic lives in lab/.  `./invoke --list` shows them all."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack, contextmanager

from invoke import Collection, Exit, task

from lab.core.config import LabConfig
from lab.core.errors import LabError


def _config(c, **overrides) -> LabConfig:
    return LabConfig.load(overrides)


def _fail(exc: Exception) -> Exit:
    return Exit(f"\nFAILED: {exc}", code=1)


# -- lab ------------------------------------------------------------------------------------
@task(help={"target": "vagrant (default) or ssh://user@host[:port]"})
def up(c, target=None):
    """Bring the lab up: host packages, builds, box, VM, provision, push, verify (idempotent)."""
    from lab.workflows.up import up as lab_up

    try:
        lab_up(_config(c, target=target))
    except LabError as exc:
        raise _fail(exc) from None


@task(help={"release": "Debian release (bookworm, trixie, bullseye)", "force": "rebuild"})
def box(c, release=None, force=False):
    """Build (or reuse from cache) the Vagrant box from Debian packages."""
    from lab.provision.box import ensure_box

    try:
        print(ensure_box(_config(c), release, force=force))
    except LabError as exc:
        raise _fail(exc) from None


@task
def push(c, target=None):
    """Redeploy build/ (Nomad, plugin, JARs) to the lab host; only what changed."""
    from lab.provision import target as lab_target
    from lab.provision.push import push as lab_push

    config = _config(c, target=target)
    try:
        with lab_target.leased(config, "invoke lab.push") as host:
            lab_push(host, config)
    except LabError as exc:
        raise _fail(exc) from None


@task
def status(c, target=None):
    """Show the VM, SSH, binaries and versions on the lab host, and leftovers."""
    from lab.checks import facts, janitor
    from lab.provision import target as lab_target

    config = _config(c, target=target)
    if config.is_vagrant:
        from lab.provision.vm import VagrantVM

        print(f"vm: {VagrantVM(config).status()}")
    try:
        host = lab_target.connect(config, check_ready=False)
        print(facts.render(facts.collect(host)))
        left = janitor.scan(host)
        print(f"leftovers: {janitor.describe(left) if left else 'none'}")
    except LabError as exc:
        raise _fail(exc) from None


@task
def ssh(c, target=None):
    """Open an interactive shell on the lab host."""
    from lab.provision import target as lab_target

    spec = lab_target.ssh_spec(_config(c, target=target))
    cmd = ["ssh", "-p", str(spec.port), "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    if spec.key_file:
        cmd += ["-i", str(spec.key_file)]
    os.execvp("ssh", [*cmd, f"{spec.user}@{spec.host}"])


def _while_leased(config, what: str, action) -> None:
    """Run `action` holding the VM's lease when it is up (a running test session keeps its
    lab host); a VM that is not running has nobody to wait for."""
    from lab.provision import target as lab_target
    from lab.provision.vm import VagrantVM

    if VagrantVM(config).domain_state() != "running":
        action()
        return
    try:
        with lab_target.leased(config, what):
            action()
    except LabError as exc:
        raise _fail(exc) from None


@task
def down(c):
    """Stop the VM (keeps its disk)."""
    from lab.provision.vm import VagrantVM

    config = _config(c)
    _while_leased(config, "invoke lab.down", VagrantVM(config).halt)


@task
def destroy(c):
    """Destroy the VM and its disk (the cached box stays)."""
    from lab.provision.vm import VagrantVM

    config = _config(c)
    _while_leased(config, "invoke lab.destroy", VagrantVM(config).destroy)


@task
def clean(c, target=None):
    """Sweep what a crashed or interrupted run left: agents, containers, cgroups, data dirs."""
    from lab.checks import janitor
    from lab.provision import target as lab_target

    config = _config(c, target=target)
    try:
        with lab_target.leased(config, "invoke lab.clean") as host:
            swept = janitor.sweep(host)
            left = janitor.scan(host)
    except LabError as exc:
        raise _fail(exc) from None
    print(f"swept: {janitor.describe(swept) if swept else 'nothing'}")
    if left:
        raise Exit(f"still there after the sweep: {janitor.describe(left)}", code=1)
    print("lab host is clean")


@task(name="run-job", help={"path": "HCL job file (e.g. jobs/hello.nomad.hcl)",
                            "wait_s": "for service jobs: seconds to let it run before stopping"})
def run_job(c, path, wait_s=0, target=None):
    """Run an HCL job (jobs/*.nomad.hcl) on a fresh agent; print its events and logs."""
    from pathlib import Path

    from lab.workflows.runjob import run_job as lab_run_job

    try:
        lab_run_job(_config(c, target=target), Path(path), float(wait_s))
    except LabError as exc:
        raise _fail(exc) from None


# -- plugin ---------------------------------------------------------------------------------
@task(name="build")
def plugin_build(c):
    """Build build/nomad, build/nomad-driver-java-crun and the test JARs."""
    from lab.workflows.up import build_all

    try:
        build_all(_config(c))
    except LabError as exc:
        raise _fail(exc) from None


@task(name="unit")
def plugin_unit(c):
    """go vet and the driver's unit tests on this host (no crun needed)."""
    c.run("cd plugin && go vet ./... && go test -count=1 ./...", pty=False)


@task(name="test", help={"run": "only the harness tests matching this Go regexp "
                                 "(go test -run), e.g. TestHarnessReservedCore"})
def plugin_test(c, target=None, run=None):
    """Run the driver-harness tests (real crun and Java) inside the lab host."""
    from lab.workflows import harness

    try:
        harness.run(_config(c, target=target), run_filter=run or harness.HARNESS_TESTS)
    except LabError as exc:
        raise _fail(exc) from None


# -- test -----------------------------------------------------------------------------------
UNTIL_FAIL_MAX = 1000  # --until-fail without --count: a bound, so CI can never loop forever


def _repeat_args(count: int, until_fail: bool) -> list[str]:
    """pytest-repeat's --count; -x for --until-fail (each repetition is its own test id, so
    its JUnit entry and diagnostics bundle are its own)."""
    if count < 0:
        raise Exit("--count must be a positive number of runs, e.g. --count 20", code=2)
    count = count or (UNTIL_FAIL_MAX if until_fail else 0)
    return ([f"--count={count}", "--repeat-scope=function"] if count > 1 else []) + \
        (["-x"] if until_fail else [])


def _pytest(args: list[str]) -> int:
    from lab.core.subrun import run_forwarding_interrupts

    return run_forwarding_interrupts([sys.executable, "-m", "pytest", *args])


@task(default=True, help={"k": "pytest -k expression",
                          "target": "lab target; several, comma-separated (or LAB_TARGETS): "
                                    "the tests are spread over them, a worker bound to each",
                          "extra": "more pytest arguments",
                          "n": "tests at once on the lab host(s): a number, or auto (from "
                               "their cores and memory); exclusive tests then run alone after",
                          "verbose": "show each test and its phases with their timings",
                          "count": "run each selected test N times (a fresh agent each time; "
                                   "each failure keeps its own diagnostics)",
                          "until_fail": "stop at the first failure (with --count: at most N "
                                        f"runs; without: up to {UNTIL_FAIL_MAX})"})
def e2e(c, k=None, target=None, extra="", n="1", verbose=False, count=0, until_fail=False):
    """Build and push what changed, then run the live e2e suite (a fresh agent per test)."""
    # --target a,b (or LAB_TARGETS=a,b): several lab hosts in one run.
    config = _config(c, targets=target)
    # Both passes of -n N write into one reports/index.html (lab/checks/report.py).
    # --durations: every run (CI's too) ends with where its time went, slowest first.
    args = ["tests/e2e", "--lab-report-id", config.run_id, "--durations=15", *extra.split()]
    args += ["-k", k] if k else []
    args += ["-v"] if verbose else []
    args += _repeat_args(int(count), until_fail)
    hosts = config.target_list
    try:
        # One lease per lab host for the push and the run (one token: pytest and its workers
        # inherit it, LAB_LEASE), and no other run can push another plugin in between.
        with _leased_and_pushed(config, hosts) as leased:
            workers = _workers(n, leased, len(hosts))
            every_host = [arg for one in hosts for arg in ("--lab-target", one)]
            if workers <= 1:
                rc = _pytest([*args, *every_host, "--junitxml=reports/junit-e2e.xml"])
            else:
                print(f"test: {workers} tests at once on {len(hosts)} lab host(s), then the "
                      f"exclusive tests alone on {hosts[0]}")
                rc = _pytest([*args, *every_host, "-n", str(workers), "-m", "not exclusive",
                              "--junitxml=reports/junit-e2e.xml"])
                rc = _pytest([*args, "--lab-target", hosts[0], "-m", "exclusive",
                              "--junitxml=reports/junit-e2e-exclusive.xml"]) or rc
    except LabError as exc:
        raise _fail(exc) from None
    if rc and rc != 5:  # 5: this pass selected no test (e.g. -k matched only the other pass)
        raise Exit(code=rc)


@contextmanager
def _leased_and_pushed(config, hosts: list[str]):
    """Each lab host leased and given this tree's build, one after another; yields the hosts."""
    from lab.provision import target as lab_target
    from lab.workflows.up import build_and_push

    with ExitStack() as stack:
        leased = []
        for one in hosts:
            host_config = config.for_target(one)
            host = stack.enter_context(lab_target.leased(host_config, "invoke test"))
            build_and_push(host_config, host)
            leased.append(host)
        yield leased


def _workers(n: str, hosts: list, at_least: int) -> int:
    """-n: a number, or auto: per lab host one worker per core, at most one per 1.5 GiB of
    its available memory (an agent and two JVMs each), as many on each host as the smallest
    one takes (workers are bound to the hosts in turn). Never fewer than the hosts."""
    if n != "auto":
        return max(at_least, int(n))
    fits = []
    for host in hosts:
        out = host.run("nproc; awk '/MemAvailable/ {print $2}' /proc/meminfo").stdout.split()
        cores, mem_kib = int(out[0]), int(out[1])
        fits.append(max(1, min(cores, int(mem_kib / (1.5 * 1024 * 1024)))))
    return max(at_least, min(fits) * len(hosts))


@task
def unit(c):
    """Run the lab library's unit tests (no VM)."""
    rc = _pytest(["tests/unit", "--junitxml=reports/junit-unit.xml"])
    if rc:
        raise Exit(code=rc)


# -- check ----------------------------------------------------------------------------------
@task
def lint(c):
    """ruff over the Python code, go vet over the plugin."""
    c.run(f"{sys.executable} -m ruff check lab tests tasks.py")
    c.run("cd plugin && go vet ./...")


# After the default lab's whole suite, CI brings up a lab of another release and runs a subset
# there: bullseye differs most (kernel 5.10 without cgroup.kill and memory.peak, crun 0.17,
# Java 11). The subset: a job end to end, the cgroup mode the lab booted, and the driver's
# fingerprint with that release's crun and Java.
SECOND_LAB = "bullseye"
SECOND_LAB_TESTS = ("test_smoke or test_the_lab_boots_the_cgroup_mode_it_asked_for or "
                    "test_node_reports_java_crun_detected_and_healthy")


def second_lab(c):
    """The default lab's VM halted first (two TCG guests at once slow both to a crawl), then
    the subset on SECOND_LAB's own VM, destroyed afterwards if this run created it."""
    down(c)
    matrix_run(c, labs=SECOND_LAB, k=SECOND_LAB_TESTS, destroy_after=True)


# What CI runs (.ci/run), in order; up before the Python unit tests: one validates rendered
# configs with build/nomad.
CHECK_ALL = (("check.lint", lambda c: lint(c)), ("plugin.unit", lambda c: plugin_unit(c)),
             ("lab.up", lambda c: up(c)), ("test.unit", lambda c: unit(c)),
             ("plugin.test", lambda c: plugin_test(c)), ("test.e2e", lambda c: e2e(c)),
             (f"matrix ({SECOND_LAB}: a subset)", second_lab))


@task(name="all", default=True, help={"dry_run": "only list the steps, in order"})
def check_all(c, dry_run=False):
    """The whole test suite: lint, Go unit tests, lab.up, Python unit tests, harness, e2e, and
    a subset on a second lab (another Debian release)."""
    for name, step in CHECK_ALL:
        print(f"check.all: {name}")
        if not dry_run:
            step(c)


# -- bench ----------------------------------------------------------------------------------
@task(name="run", default=True)
def bench_run(c, cold=False):
    """Measure lab.up (warm; --cold destroys the VM first), agent start/stop, job vs bare crun."""
    from lab.workflows import bench

    try:
        bench.run(_config(c), cold=cold)
    except LabError as exc:
        raise _fail(exc) from None


# -- matrix ---------------------------------------------------------------------------------
@task(name="matrix", help={
    "labs": "comma-separated labs: release[-v1][+kernel], e.g. bullseye,bookworm-v1,trixie "
            "(default: bullseye,bookworm,bookworm+bpo,trixie,bookworm-v1)",
    "k": "pytest -k expression", "m": "pytest -m expression", "extra": "more pytest arguments",
    "destroy_after": "destroy each lab's VM after its run if this run created it"})
def matrix_run(c, labs=None, k=None, m=None, extra="", destroy_after=False):
    """The suite (or a -k/-m subset) on several labs, one after another; a table of results."""
    from lab.workflows import matrix

    try:
        runs = matrix.run_matrix(matrix.parse_labs(labs), k=k, m=m, extra=extra.split(),
                                 destroy_after=destroy_after)
    except LabError as exc:
        raise _fail(exc) from None
    table = matrix.render_table(runs)
    print("\n" + table)
    (LabConfig.load().reports_dir / "matrix.txt").write_text(table + "\n")
    if any(r.error or any(cell.outcome == "fail" for cell in r.cells.values()) for r in runs):
        raise Exit(code=1)


lab = Collection("lab", up, box, push, status, ssh, down, destroy, clean, run_job)
plugin = Collection("plugin", plugin_build, plugin_unit, plugin_test)
test = Collection("test", e2e, unit)
check = Collection("check", lint, check_all)
bench_ns = Collection("bench", bench_run)
ns = Collection(lab, plugin, test, check, bench_ns, matrix_run)
