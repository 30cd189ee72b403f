"""`plugin.test`: the driver-harness Go tests, compiled here and run inside the lab host.

They need real crun on a pure cgroup v2 host, which the control host is not (crun refuses
hybrid cgroups), so the test binaries travel to the lab host like the plugin does.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

from lab.core.config import LabConfig
from lab.core.errors import LabError
from lab.provision import target
from lab.provision.build import GO_ENV, GO_FLAGS, SHIM_PACKAGE, go_binary
from lab.remote.layout import JAR_DIR, REMOTE_ROOT, SHIM_RELPATH

HARNESS_PACKAGE = "./driver"
# The unit tests of the package already ran on the control host (plugin.unit).
HARNESS_TESTS = "^TestHarness"
# Measurements, not checks: run by `invoke bench` (lab/workflows/bench.py), not plugin.test.
BENCH_TESTS = "^TestBench"
REMOTE_DIR = f"{REMOTE_ROOT}/harness"


def compile_tests(config: LabConfig) -> list:
    out_dir = config.build_dir / "harness"
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.test"):
        old.unlink()
    # Static, as the plugin is (GO_ENV): a cgo test binary needs this host's glibc, and
    # bullseye's is older ("GLIBC_2.34 not found" on the bullseye lab).
    res = subprocess.run([go_binary(), "test", "-c", "-o", str(out_dir), HARNESS_PACKAGE],
                         cwd=config.root / "plugin", capture_output=True, text=True,
                         env={**os.environ, **GO_ENV})
    if res.returncode:
        raise LabError(f"compiling the driver-harness tests failed:\n{res.stderr[-3000:]}")
    return sorted(out_dir.glob("*.test"))


def compile_shim(config: LabConfig) -> Path:
    """The shim the harness's driver runs, beside the test binary where the driver looks for
    it; unstamped, as the test binary is, so that their versions match."""
    out = config.build_dir / "harness" / SHIM_RELPATH
    res = subprocess.run([go_binary(), "build", *GO_FLAGS, "-o", str(out), SHIM_PACKAGE],
                         cwd=config.root / "plugin", capture_output=True, text=True,
                         env={**os.environ, **GO_ENV})
    if res.returncode:
        raise LabError(f"building the shim for the driver-harness tests failed:\n"
                       f"{res.stderr[-3000:]}")
    return out


def run(config: LabConfig, out=print, run_filter: str = HARNESS_TESTS) -> None:
    with target.leased(config, "invoke plugin.test", out, check_ready=True) as host:
        run_on(config, host, out, run_filter)


def run_on(config: LabConfig, host, out, run_filter: str) -> None:
    """The harness tests matching run_filter, on a lab host this process already holds."""
    start = time.monotonic()
    binaries = compile_tests(config)
    host.put(compile_shim(config), f"{REMOTE_DIR}/{SHIM_RELPATH}", "0755")
    failed = []
    for binary in binaries:
        remote = f"{REMOTE_DIR}/{binary.name}"
        host.put(binary, remote, "0755")
        flags = "-test.v -test.count=1" + (f" -test.run {shlex.quote(run_filter)}"
                                           if run_filter else "")
        out(f"harness: {binary.name} on {host.spec.url}")
        res = host.sudo(f"cd {REMOTE_DIR} && JAVA_CRUN_TEST_JARS={JAR_DIR} {remote} {flags} 2>&1",
                        check=False, timeout=config.timeout("command") * 10)
        out(res.stdout)
        if not res.ok:
            failed.append(binary.name)
    out(f"harness: {len(binaries) - len(failed)}/{len(binaries)} packages passed "
        f"({time.monotonic() - start:.1f}s)")
    if failed:
        raise LabError(f"driver-harness tests failed in {failed}: see the output above")
