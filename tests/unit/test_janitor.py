"""janitor: scan parses "<kind> <item>" lines, sweep runs the script and heals faults; the
scripts agree with the plugin's layout and never match (or kill) the shell running them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import bash_syntax_errors

from lab.checks import janitor
from lab.core.config import ROOT
from lab.core.errors import CommandFailed
from lab.remote.layout import (
    AGENTS_ROOT,
    CRUN_STATE_ROOT,
    PLUGIN_BINARY,
    PLUGIN_DIR,
    SHIM_BINARY,
    SHIM_PATH,
    SHIM_RELPATH,
)

SCAN_OUTPUT = """unit nomad-lab-abc123-1.service
data_dir nomad-lab-abc123-1

container 3f2a.app
container 3f2b.app
shim 4242 /opt/lab/plugins/nomad-driver-java-crun /run/java-crun/bundles/3f2a.app
java_process 4250 java -jar /local/hello.jar
noise
  cgroup /sys/fs/cgroup/nomad.slice/share.slice/3f2a.app.scope
"""


def test_scan_groups_items_by_kind(host):
    host.on("list-units", SCAN_OUTPUT)
    assert janitor.scan(host, include_faults=False) == {
        "unit": ["nomad-lab-abc123-1.service"],
        "data_dir": ["nomad-lab-abc123-1"],
        "container": ["3f2a.app", "3f2b.app"],
        "shim": ["4242 /opt/lab/plugins/nomad-driver-java-crun /run/java-crun/bundles/3f2a.app"],
        "java_process": ["4250 java -jar /local/hello.jar"],
        "cgroup": ["/sys/fs/cgroup/nomad.slice/share.slice/3f2a.app.scope"],
    }
    (call,) = host.calls
    assert call.cmd == janitor.SCAN_SCRIPT and call.sudo and not call.check


def test_scan_of_a_clean_host_is_empty(host, monkeypatch):
    from lab import faults

    monkeypatch.setattr(faults, "scan", lambda host: [])
    assert janitor.scan(host) == {}


def test_scan_counts_unhealed_faults_as_leftovers_in_the_same_round_trip(host):
    from lab import faults

    host.on("list-units", "fault iptables -A INPUT ... lab-fault\n")
    assert janitor.scan(host) == {"fault": ["iptables -A INPUT ... lab-fault"]}
    (call,) = host.calls
    assert faults.scan_script() in call.cmd and "| prefix fault" in call.cmd
    assert janitor.scan(host, include_faults=False) == {"fault": [
        "iptables -A INPUT ... lab-fault"]}  # the fake answers the same; the script differs
    assert faults.scan_script() not in host.calls[-1].cmd


def test_describe_is_stable_json():
    assert janitor.describe({"b": ["2"], "a": ["1"]}) == '{\n  "a": [\n    "1"\n  ],\n' \
        '  "b": [\n    "2"\n  ]\n}'


@pytest.fixture
def fault_sweeps(monkeypatch, host):
    from lab import faults

    swept = []
    monkeypatch.setattr(faults, "scan", lambda host: [])
    # Record how many host commands ran before the fault heal: it must come first.
    monkeypatch.setattr(faults, "sweep", lambda h: swept.append((h, len(host.calls))) or [])
    return swept


def test_sweep_returns_what_was_there_runs_the_script_then_heals_faults(host, fault_sweeps):
    host.on("list-units", "unit nomad-lab-old-3.service\n")
    assert janitor.sweep(host) == {"unit": ["nomad-lab-old-3.service"]}
    scan, sweep = host.calls
    assert janitor.SCAN_SCRIPT in scan.cmd
    assert sweep.cmd == janitor.SWEEP_SCRIPT and sweep.sudo and sweep.timeout == 120
    assert not sweep.check, "a partly failing sweep must not stop the teardown"
    assert fault_sweeps == [(host, 1)], "faults are healed after the scan, before the sweep"


def test_a_failing_fault_heal_is_not_swallowed(host, monkeypatch):
    from lab import faults

    monkeypatch.setattr(faults, "scan", lambda host: [])

    def broken(host):
        raise CommandFailed(host.name, "heal", 1, "iptables: busy")

    monkeypatch.setattr(faults, "sweep", broken)
    with pytest.raises(CommandFailed, match="iptables: busy"):
        janitor.sweep(host)


def test_sweep_removes_every_root_it_scans():
    script = janitor.SWEEP_SCRIPT
    assert f"rm -rf {AGENTS_ROOT}/* {CRUN_STATE_ROOT}" in script
    assert f"for root in {janitor.CRUN_ROOTS}" in script
    assert 'crun --root "$root" delete --force' in script
    assert script.index("delete --force") < script.index("rm -rf"), \
        "containers are deleted through crun before their state is removed"
    assert "umount -l" in script and script.index("umount -l") < script.index("rm -rf")


# -- pgrep/pkill patterns --------------------------------------------------------------------


def process_patterns(script: str) -> list[tuple[str, str]]:
    return re.findall(r"\b(pgrep|pkill)\b[^'\n]*-f '([^']+)'", script)


PLUGIN_CMDLINE = f"{PLUGIN_DIR}/{PLUGIN_BINARY}"
SHIM_CMDLINE = f"{PLUGIN_DIR}/{PLUGIN_BINARY} {CRUN_STATE_ROOT}/nomad-lab-ab12-3/bundles/3f2a.app"


def test_the_sweeps_kill_pattern_never_matches_the_shell_running_it():
    """bash -c '<script>' (and sudo) carry the script in their command line: pkill -f would
    SIGKILL the very shell running the sweep."""
    patterns = process_patterns(janitor.SWEEP_SCRIPT)
    assert patterns, "expected pkill -f probes"
    for tool, pattern in patterns:
        assert not re.search(pattern, janitor.SWEEP_SCRIPT), f"{tool} -f {pattern!r} matches"
        assert not re.search(pattern, f"sudo -n bash -c {janitor.SWEEP_SCRIPT!r}")


def test_the_scans_shim_pattern_finds_shims_but_not_the_plugin_or_its_own_script():
    assert re.search(janitor.SHIM_ARGS, SHIM_CMDLINE)
    assert not re.search(janitor.SHIM_ARGS, PLUGIN_CMDLINE)
    for script in (janitor.SCAN_SCRIPT, janitor.scan_script(include_faults=True)):
        # Every subshell of the scan carries the whole script as its command line.
        assert not re.search(janitor.SHIM_ARGS, f"sudo -n bash -c {script!r}")
    (kill_pattern,) = [p for tool, p in process_patterns(janitor.SWEEP_SCRIPT)]
    assert re.search(kill_pattern, SHIM_CMDLINE) and re.search(kill_pattern, PLUGIN_CMDLINE)


def test_the_scan_run_by_a_real_shell_reports_planted_processes_but_not_itself(tmp_path):
    """The whole scan, run by this machine's bash: a process whose command line is a shim's
    and one named java are reported, each on one line (a newline in an argument included),
    and the shell running the scan is not."""
    java = tmp_path / "java"
    java.symlink_to(shutil.which("sleep"))
    bundle = f"{CRUN_STATE_ROOT}/nomad-lab-r-1/bundles/0123-app"
    # Sessions of their own, as an agent's processes have (systemd starts them): the scan
    # leaves out its own session, where the checks beside it in a batch run.
    shim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                             f"{PLUGIN_DIR}/{PLUGIN_BINARY}", bundle], start_new_session=True)
    jvm = subprocess.Popen([str(java), "30"], executable=str(java), start_new_session=True)
    mine = subprocess.Popen([str(java), "31"], executable=str(java))  # the scan's session
    try:
        # /proc/<pid>/cmdline is written by the exec: wait until both show theirs.
        for proc in (shim, jvm):
            for _ in range(100):
                if Path(f"/proc/{proc.pid}/cmdline").read_bytes():
                    break
                time.sleep(0.05)
        out = subprocess.run(["bash", "-c", janitor.SCAN_SCRIPT], capture_output=True,
                             text=True, timeout=30).stdout
    finally:
        for proc in (shim, jvm, mine):
            proc.kill()
            proc.wait()
    lines = out.splitlines()
    assert not [line for line in lines if line.startswith(f"java_process {mine.pid} ")], out
    assert f"shim {shim.pid} {sys.executable} -c import time; time.sleep(30) " \
           f"{PLUGIN_DIR}/{PLUGIN_BINARY} {bundle}" in lines, out
    assert f"java_process {jvm.pid} {java} 30 " in lines, out
    assert not [line for line in lines if "bash" in line or "shopt" in line], out


# -- contract with the plugin's sources ------------------------------------------------------

PLUGIN_SRC = ROOT / "plugin"


def go_source(rel: str) -> str:
    path = PLUGIN_SRC / rel
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path.read_text()


def test_plugin_default_state_root_is_the_labs():
    config = go_source("driver/config.go")
    assert re.search(rf'StateRoot:\s*"{re.escape(CRUN_STATE_ROOT)}"', config)


def test_crun_root_and_bundles_match_the_plugins_layout():
    launch = go_source("driver/launch.go")
    crun_dir = re.search(r'CrunRoot:\s*filepath\.Join\(d\.config\(\)\.StateRoot, "([^"]+)"\)',
                         launch)
    bundles = re.search(r'BundleDir:\s*filepath\.Join\(d\.config\(\)\.StateRoot, "([^"]+)"',
                        launch)
    assert crun_dir and bundles, "plugin/driver/launch.go changed: update lab/checks/janitor.py"
    assert janitor.CRUN_ROOTS == f"{CRUN_STATE_ROOT}/*/{crun_dir[1]}"
    assert f"{CRUN_STATE_ROOT}/[^ ]*/{bundles[1]}/" in janitor.SCAN_SCRIPT


def test_shims_run_as_the_shim_binary_with_the_bundle_dir():
    run = go_source("shim/run.go")
    assert "exec.Command(binary, bundle)" in run, \
        "the shim's command line changed: update the shim probe in lab/checks/janitor.py"
    names = go_source("shim/binary.go")
    assert f'BinaryName = "{SHIM_BINARY}"' in names and \
        f'BinaryDir  = "{SHIM_RELPATH.split("/")[0]}"' in names, \
        "the shim binary's name or directory changed: update lab/remote/layout.py"


@pytest.mark.parametrize("program", [SHIM_PATH, f"{PLUGIN_DIR}/{PLUGIN_BINARY}"])
def test_the_shim_pattern_finds_a_shim_of_either_binary_but_not_its_own_command_line(program):
    bundles = f"{CRUN_STATE_ROOT}/nomad-lab-r-1/bundles/"
    pattern = re.compile(f"{janitor.SHIMS} {re.escape(bundles)}")
    assert pattern.search(f"{program} {bundles}0123-app")
    assert not pattern.search(f"pgrep -a -f {janitor.SHIMS} {bundles}")


@pytest.mark.parametrize("script", [janitor.SCAN_SCRIPT, janitor.SWEEP_SCRIPT],
                         ids=["scan", "sweep"])
def test_scripts_parse_as_bash(script):
    assert bash_syntax_errors(script) == ""


def test_scan_leaves_out_the_traces_of_agents_started_ahead(host):
    """The next test's agent, started while this test runs, is not this test's leftover."""
    host.on("list-units", "unit nomad-lab-ab12-4.service\ndata_dir nomad-lab-ab12-4\n"
            "data_dir nomad-lab-ab12-3\ncontainer 3f2a.app\n")
    found = janitor.scan(host, include_faults=False, exclude_agents=["nomad-lab-ab12-4"])
    assert found == {"data_dir": ["nomad-lab-ab12-3"], "container": ["3f2a.app"]}


def test_scan_leaves_out_the_java_probe_of_an_agent_started_ahead_but_not_of_agent_10(host):
    """The plugin of an agent started ahead runs `java -version` to fingerprint (seen as a
    false leftover on the bullseye lab); the scan names its unit, so the exclusion covers it.
    Agent 1's exclusion must not hide agent 10's traces."""
    host.on("list-units", "java_process 6049 /usr/bin/java -version (in nomad-lab-ab12-1.service)\n"
            "java_process 7001 /usr/bin/java -version (in nomad-lab-ab12-10.service)\n"
            "java_process 7002 java -jar /local/app.jar\ndata_dir nomad-lab-ab12-10\n")
    found = janitor.scan(host, include_faults=False, exclude_agents=["nomad-lab-ab12-1"])
    assert found == {"java_process": ["7001 /usr/bin/java -version (in nomad-lab-ab12-10.service)",
                                      "7002 java -jar /local/app.jar"],
                     "data_dir": ["nomad-lab-ab12-10"]}


def test_scan_agent_reports_only_that_agents_traces(tmp_path, monkeypatch):
    """scan-agent.sh run by a real bash, with systemctl and crun stand-ins: the agent's data
    dir, container and bundle are found; another agent's are not."""
    import os

    from lab.remote.host import SCRIPTS_DIR

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text('#!/bin/sh\necho "$2 loaded active running x"\n')
    (bin_dir / "crun").write_text("#!/bin/sh\necho \"c-of-$(basename $(dirname $2))\"\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    agents, states = tmp_path / "agents", tmp_path / "states"
    for agent in ("nomad-lab-r-1", "nomad-lab-r-2"):
        (agents / agent).mkdir(parents=True)
        (states / agent / "crun" / f"c-of-{agent}").mkdir(parents=True)
        (states / agent / "bundles" / "a1.app").mkdir(parents=True)
        (states / agent / "bundles" / "a1.app" / "config.json").write_text("{}")
    # A shim of each agent: a process whose command line is `<shim> <state root>/bundles/<id>`.
    shims = {agent: subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                                      SHIM_PATH, f"{states / agent}/bundles/a1.app"],
                                     start_new_session=True)
             for agent in ("nomad-lab-r-1", "nomad-lab-r-2")}
    script = (SCRIPTS_DIR / "scan-agent.sh").read_text()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    try:
        for proc in shims.values():  # /proc/<pid>/cmdline is written by the exec
            for _ in range(100):
                if b"a1.app" in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
                    break
                time.sleep(0.05)
        res = subprocess.run(["bash", "-c", script, "scan-agent.sh", "nomad-lab-r-1",
                              str(agents), str(states / "nomad-lab-r-1"), janitor.SHIMS,
                              "0000-no-such-alloc"],
                             env=env, capture_output=True, text=True, timeout=30)
    finally:
        for proc in shims.values():
            proc.kill()
            proc.wait()
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines == ["unit nomad-lab-r-1.service", "data_dir nomad-lab-r-1",
                     "container c-of-nomad-lab-r-1",
                     f"bundle {states}/nomad-lab-r-1/bundles/a1.app/config.json",
                     f"shim {shims['nomad-lab-r-1'].pid} {sys.executable} -c "
                     f"import time; time.sleep(30) {SHIM_PATH} "
                     f"{states}/nomad-lab-r-1/bundles/a1.app"], res.stdout


def test_scan_agent_finds_a_fault_trace_in_the_same_round_trip(tmp_path, monkeypatch):
    """scan-agent.sh and the faults' scan in one command, run by real bash in the faults'
    sandbox: a heal script left pending (a test died mid-fault) is reported as a fault."""
    from sandbox import make_sandbox

    from lab.faults import framework

    host = make_sandbox(tmp_path, monkeypatch)
    pending = Path(framework.STATE_DIR) / "java_missing-1.sh"
    pending.parent.mkdir(parents=True)
    pending.write_text("true\n")
    found = janitor.scan_agent(host, "nomad-lab-r-1", ["0000-no-such-alloc"])
    assert found == {"fault": [f"heal-pending {pending}"]}, found
    assert len(host.commands) == 1
    assert janitor.scan_agent(host, "nomad-lab-r-1", [], include_faults=False) == {}


def test_scan_agent_finds_a_session_as_the_global_scan_does():
    from lab.remote.host import SCRIPTS_DIR

    assert janitor.SESSION_OF in (SCRIPTS_DIR / "scan-agent.sh").read_text()


def test_a_java_started_by_a_check_beside_the_scan_is_not_a_leftover(tmp_path):
    """lab.up and the session's start run the scan in one batch with the guest set-up and the
    facts, which run `java -version`: that JVM is the batch's own, not a trace."""
    from lab.remote import batch

    java = tmp_path / "java"
    java.symlink_to(shutil.which("sleep"))
    host = type("Host", (), {"spec": type("Spec", (), {"url": "ssh://local"}),
                             "run": lambda self, cmd, **kw: _local(cmd)})()
    results = batch.run_together(host, {
        "facts": f"{java} 2",  # runs while the scan walks /proc
        # The scan starts once that JVM runs (a poll under a deadline).
        "leftovers": f"for i in $(seq 100); do pgrep -f '^{java} 2' >/dev/null && break; "
                     f"sleep 0.05; done\n{janitor.SCAN_SCRIPT}",
    })
    assert results["facts"].rc == 0
    assert "java_process" not in results["leftovers"].stdout, results["leftovers"].stdout


def _local(cmd: str):
    from lab.remote.host import CommandResult

    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30)
    return CommandResult(cmd, proc.returncode, proc.stdout, proc.stderr)
