"""The fault registry: sweep and scan are derived from the registered faults' markers, so a new
fault is covered by registering it, and every registered fault's traces are found and healed
from its markers alone. The fault scripts pass shellcheck and agree with lab.faults' constants."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from fakes import FakeHost
from sandbox import heal_scripts, leftovers, make_sandbox

from lab import faults
from lab.faults import framework
from lab.faults.framework import Plan, call
from lab.faults.registry import Fault, Marker, Registry
from lab.remote.host import CommandResult

# A fault of a kind lab.faults does not have: it leaves <path>.lab-thing files.
THING_SH = r"""#!/bin/bash
set -u
sub=$1
shift
case $sub in
  make) touch "$1.lab-thing" ;;
  remove) rm -f "$1.lab-thing" ;;
  present) [ -e "$1.lab-thing" ] ;;
  absent) [ ! -e "$1.lab-thing" ] ;;
  scan) find "$@" -name '*.lab-thing' ;;
  sweep) find "$@" -name '*.lab-thing' | while read -r f; do rm -f "$f"; echo "healed: $f"; done ;;
esac
"""


@pytest.fixture
def thing(tmp_path):
    """(registry with a `thing_left` fault added, its marker, the path it marks)."""
    script = tmp_path / "thing.sh"
    script.write_text(THING_SH)
    marker = Marker("thing", str(script), scope="roots")  # an absolute path: not in scripts/
    registry = faults.REGISTRY.copy()

    @registry.fault(marker)
    def thing_left(host, path: str) -> Plan:
        return Plan({"path": path}, inject=[call(str(script), "make", path)],
                    heal=[call(str(script), "remove", path)],
                    check=[call(str(script), "present", path)],
                    healed=[call(str(script), "absent", path)])

    return registry, thing_left, marker


def local_bash(cmd: str) -> CommandResult:
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30)
    return CommandResult(cmd, proc.returncode, proc.stdout, proc.stderr)


def test_registering_a_fault_makes_sweep_and_scan_cover_its_marker(thing, tmp_path,
                                                                   monkeypatch):
    registry, thing_left, marker = thing
    monkeypatch.setattr(framework, "STATE_DIR", str(tmp_path / "state"))
    host = FakeHost().on("", local_bash)  # every command runs in local bash
    roots = [str(tmp_path / "root")]
    target = tmp_path / "root" / "file"
    target.parent.mkdir()
    assert marker.step("scan", roots).subshell() in registry.scan_script(roots)
    assert marker.step("sweep", roots).command() in registry.sweep_script(roots)
    assert marker not in faults.REGISTRY.markers(), "the lab's own registry is untouched"

    left = thing_left(host, str(target), journal=faults.Journal())
    left.__enter__()  # never exited (keep the reference: a collected one would heal)
    (tmp_path / "state").joinpath(heal_scripts()[0]).unlink()  # nor can its heal script run
    assert registry.scan(host, roots) == [f"thing {target}.lab-thing"]
    assert faults.scan(host, roots) == []  # the lab's registry does not know this marker
    assert registry.sweep(host, roots) == [f"healed: {target}.lab-thing"]
    assert registry.scan(host, roots) == [] and not target.with_name("file.lab-thing").exists()
    left.__exit__(None, None, None)  # the heal, after the sweep, changes nothing


def test_scan_and_sweep_are_the_registry_markers_pending_heals_first():
    markers = faults.REGISTRY.markers()
    assert markers[0] == faults.PENDING
    assert {m.name for m in markers} == {"heal-pending", "moved-aside", "staged-wrapper",
                                         "not-executable", "qdisc", "iptables", "hung-task"}
    script = faults.scan_script(["/r"])
    positions = [script.index(m.step("scan", ["/r"]).subshell()) for m in markers]
    assert positions == sorted(positions)
    sweep = faults.REGISTRY.sweep_script(["/r"])
    assert all(m.step("sweep", ["/r"]).command() in sweep for m in markers)


def test_a_fault_name_is_registered_once():
    registry = Registry([Fault("x", ())])
    with pytest.raises(ValueError, match="'x' is registered already"):
        registry.add(Fault("x", ()))


def test_sweep_marks_swept_faults_healed_but_not_those_nomad_heals(monkeypatch):
    host = FakeHost()
    journal = faults.Journal()
    monkeypatch.setattr(faults.registry, "JOURNAL", journal)
    swept = journal.open(host, "crun_missing", {})
    killed = journal.open(host, "plugin_killed", {"pids": [1]})
    faults.sweep(host)
    assert swept.details["healed_by"] == "sweep" and not swept.active
    assert killed.active


# -- every registered fault, left unhealed, is found and healed from its markers -----------
def examples(host):
    """One way to inject each registered fault in the sandbox; a new fault needs one here."""
    root = host.root
    return {
        "java_library_missing": lambda: faults.java_library_missing(host),
        "java_missing": lambda: faults.java_missing(host, java=f"{root}/bin/java"),
        "java_not_executable": lambda: faults.java_not_executable(host),
        "crun_missing": lambda: faults.crun_missing(host, path=f"{root}/usr/bin/crun"),
        "crun_failing": lambda: faults.crun_failing(host, path=f"{root}/usr/bin/crun"),
        "network_delay": lambda: faults.network_delay(host, 50, port=8080),
        "connection_resets": lambda: faults.connection_resets(host, 8080, every=2),
        "hung_task": lambda: faults.hung_task(host, timeout_s=5),
    }


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    return make_sandbox(tmp_path, monkeypatch)


def test_every_registered_fault_has_a_sandbox_example(sandbox):
    healed_by_lab = {f.name for f in faults.REGISTRY if f.plan is not None}
    assert set(examples(sandbox)) == healed_by_lab


@pytest.mark.parametrize("name", sorted(f.name for f in faults.REGISTRY if f.plan is not None))
def test_a_fault_left_unhealed_is_found_and_healed_by_its_own_markers(sandbox, name):
    """What a SIGKILLed pytest leaves, minus the heal script: only the fault's markers can
    see and heal it, so they must cover everything it changes."""
    before = snapshot(sandbox)
    fault = examples(sandbox)[name]()
    fault.__enter__()
    for script in heal_scripts():
        (sandbox.root / "var-lib-lab-faults" / script).unlink()
    own = {m.name for m in faults.REGISTRY.get(name).markers}
    found = leftovers(sandbox)
    assert found and {line.split()[0] for line in found} <= own, found
    assert faults.sweep(sandbox, roots=[str(sandbox.root)])
    assert leftovers(sandbox) == []
    assert snapshot(sandbox) == before
    fault.__exit__(None, None, None)  # the test's own heal, after the sweep: a no-op
    assert snapshot(sandbox) == before


def snapshot(host) -> dict:
    """The sandbox's state a fault may change: files and modes, tc and iptables."""
    files = {str(p.relative_to(host.root)): (p.stat().st_mode, p.read_bytes())
             for p in sorted(host.root.rglob("*"))
             if p.is_file() and not p.is_symlink() and "fakestate" not in p.parts
             and p.name != "crun-calls.log"}
    return {"files": files, "tc": host.tc()["qdiscs"], "iptables": host.iptables()}


# -- the scripts ---------------------------------------------------------------------------
def test_fault_scripts_pass_shellcheck(tmp_path):
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    wrapper = tmp_path / "crun-wrapper-installed.sh"  # as installed, settings filled in
    wrapper.write_text(faults.crun_wrapper("/usr/bin/crun.lab-hidden", "it's \"bad\" 100%",
                                           ["run", "create"], "abcd"))
    scripts = sorted(framework.SCRIPTS.glob("*.sh"))
    assert len(scripts) >= 8
    res = subprocess.run(["shellcheck", *map(str, scripts), str(wrapper)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


@pytest.mark.parametrize("script,variable,value", [
    ("moved-aside.sh", "hidden", faults.HIDDEN),
    ("moved-aside.sh", "wrapper_mark", faults.WRAPPER_MARK),
    ("netem.sh", "handle", faults.QDISC_HANDLE),
    ("netem.sh", "netem_handle", faults.NETEM_HANDLE),
    ("reset-rule.sh", "tag", faults.RULE_TAG),
])
def test_script_constants_agree_with_lab_faults(script, variable, value):
    text = (framework.SCRIPTS / script).read_text()
    assert re.search(rf"^{variable}={re.escape(value)}\s", text, re.M), \
        f"{script}: {variable}= must be {value!r} (lab.faults)"
    if variable == "wrapper_mark":
        assert value in (framework.SCRIPTS / "crun-wrapper.sh").read_text().splitlines()[1]
