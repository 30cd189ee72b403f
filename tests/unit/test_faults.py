"""lab.faults against a sandbox host (sandbox.py): the fault scripts really run, on files in a
temporary directory, with tc, iptables and modprobe stubbed. No VM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from sandbox import REAL_CRUN, heal_scripts, leftovers, make_sandbox

from lab import faults
from lab.core.errors import CommandFailed, LabTimeout
from lab.faults import framework


@pytest.fixture
def host(tmp_path, monkeypatch):
    return make_sandbox(tmp_path, monkeypatch)


@pytest.fixture
def journal():
    return faults.Journal()


# -- Java ------------------------------------------------------------------------------------
def test_java_library_missing_hides_the_lib_found_from_path_and_heals(host, journal):
    lib = host.root / "jvm" / "lib" / "libjli.so"
    with faults.java_library_missing(host, journal=journal) as fault:
        assert not lib.exists() and lib.with_name("libjli.so.lab-hidden").exists()
        assert fault.details["path"] == str(lib)
        assert fault.details["java_home"] == str(host.root / "jvm")
        assert "libjli.so" in fault.details["observed"]  # java's own complaint
        assert heal_scripts() == [f"java_library_missing-{fault.token}.sh"]
        assert fault.active and fault.injected_at
    assert lib.read_bytes() == b"\x7fELF fake"
    assert heal_scripts() == [] and leftovers(host) == []
    assert not fault.active and fault.healed_at >= fault.injected_at
    assert journal.records() == [fault]


def test_heal_runs_when_the_body_raises(host, journal):
    lib = host.root / "jvm" / "lib" / "libjli.so"
    with pytest.raises(RuntimeError, match="test body failed"):
        with faults.java_library_missing(host, journal=journal):
            raise RuntimeError("test body failed")
    assert lib.exists() and leftovers(host) == []
    assert journal.records()[0].healed_at


def test_heal_and_sweep_are_idempotent(host, journal):
    with faults.java_library_missing(host, journal=journal) as fault:
        heal = Path(faults.heal_path(fault)).read_text()
    for _ in range(2):  # the saved heal script, run again after the heal: changes nothing
        host.sudo(heal)
    assert (host.root / "jvm" / "lib" / "libjli.so").exists()
    assert faults.sweep(host, roots=[str(host.root)]) == []
    assert faults.sweep(host, roots=[str(host.root)]) == []


def test_sweep_heals_what_a_crashed_run_left(host, journal):
    lib = host.root / "jvm" / "lib" / "libjli.so"
    crun = host.root / "usr" / "bin" / "crun"
    real = crun.read_text()
    # entered and never exited: what a SIGKILLed pytest leaves behind (keep references, or
    # garbage collection closes the generators and so runs their heals)
    entered = [faults.java_library_missing(host, journal=journal),
               faults.crun_failing(host, path=str(crun), journal=journal),
               faults.network_delay(host, 50, journal=journal),
               faults.connection_resets(host, 8080, journal=journal)]
    for fault in entered:
        fault.__enter__()
    assert not lib.exists() and faults.WRAPPER_MARK in crun.read_text()
    assert len(leftovers(host)) >= 6  # 4 heal scripts, hidden files, rule, qdisc
    healed = faults.sweep(host, roots=[str(host.root)])
    assert any("ran" in line for line in healed)
    assert lib.exists() and crun.read_text() == real
    assert host.tc()["qdiscs"] == [] and host.iptables() == []
    assert leftovers(host) == [] and heal_scripts() == []
    assert faults.sweep(host, roots=[str(host.root)]) == []


def test_sweep_without_heal_scripts_uses_the_markers(host):
    lib = host.root / "jvm" / "lib" / "libjli.so"
    lib.rename(lib.with_name("libjli.so.lab-hidden"))
    host.sudo("iptables -w -I INPUT -p tcp --dport 1 -m comment --comment lab-fault:x "
              "-j REJECT --reject-with tcp-reset")
    host.sudo("tc qdisc add dev eth9 root handle 1ab: netem delay 5ms")
    healed = faults.sweep(host, roots=[str(host.root)])
    assert lib.exists()
    assert host.iptables() == [] and host.tc()["qdiscs"] == []
    assert len(healed) == 3, healed


def test_java_missing_with_an_explicit_path(host, journal):
    java = host.root / "jvm" / "bin" / "java"
    with faults.java_missing(host, java=str(host.root / "bin" / "java"),
                             journal=journal) as fault:
        assert fault.details["path"] == str(java)
        assert not java.exists()
        assert host.sudo(f"command -v {host.root}/bin/java", check=False).rc != 0
    assert java.exists() and os.access(java, os.X_OK)


def test_java_missing_refuses_to_pretend_when_another_java_is_on_path(host, journal):
    other = host.root / "bin" / "other"
    other.mkdir()
    shutil.copy(host.root / "jvm" / "bin" / "java", other / "java")
    host.env["PATH"] = host.env["PATH"].replace(f"{host.root}/bin:",
                                                f"{host.root}/bin:{other}:")
    with pytest.raises(faults.FaultNotInjected, match="still resolves"):
        with faults.java_missing(host, journal=journal):
            pytest.fail("the body must not run")
    assert (host.root / "jvm" / "bin" / "java").exists()
    assert journal.records()[0].error.startswith("not injected")
    assert leftovers(host) == []


def test_java_not_executable_restores_the_exact_mode(host, journal):
    java = host.root / "jvm" / "bin" / "java"
    java.chmod(0o750)
    with faults.java_not_executable(host, java_home=str(host.root / "jvm"),
                                    journal=journal) as fault:
        assert fault.details["mode"] == "750"
        assert java.stat().st_mode & 0o777 == 0o640
        assert "Permission denied" in fault.details["observed"]
    assert java.stat().st_mode & 0o777 == 0o750


def test_a_heal_that_cannot_restore_raises_heal_failed(host, journal):
    java = host.root / "jvm" / "bin" / "java"
    with pytest.raises(faults.HealFailed, match="java_not_executable"):
        with faults.java_not_executable(host, java_home=str(host.root / "jvm"),
                                        journal=journal):
            java.unlink()  # something else broke the host meanwhile
    assert journal.records()[0].active and journal.records()[0].error


def test_a_heal_retries_while_ssh_is_down(host, journal):
    lib = host.root / "jvm" / "lib" / "libjli.so"
    with faults.java_library_missing(host, journal=journal):
        host.ssh_down_for.append(f"fault.sh heal {framework.STATE_DIR}/")
    assert lib.exists()
    heals = [c for c in host.commands if f"fault.sh heal {framework.STATE_DIR}/" in c]
    assert len(heals) == 2  # one lost to SSH, one that worked


def test_unknown_library_and_unhealed_state_are_refused_before_any_change(host, journal):
    with pytest.raises(faults.FaultError, match="no libnope.so under"):
        with faults.java_library_missing(host, "libnope.so", journal=journal):
            pass
    lib = host.root / "jvm" / "lib" / "libjli.so"
    lib.rename(lib.with_name("libjli.so.lab-hidden"))
    with pytest.raises(faults.FaultError, match="not healed"):
        with faults.java_library_missing(host, journal=journal):
            pass
    assert journal.records() == [] and heal_scripts() == []


# -- crun ------------------------------------------------------------------------------------
def test_crun_missing(host, journal):
    crun = host.root / "usr" / "bin" / "crun"
    with faults.crun_missing(host, path=str(crun), journal=journal):
        assert not crun.exists()
    assert crun.read_text() == REAL_CRUN
    assert leftovers(host) == []


def test_crun_failing_fails_the_listed_subcommands_like_crun_and_passes_the_rest(host,
                                                                                journal):
    crun = host.root / "usr" / "bin" / "crun"
    calls = host.root / "crun-calls.log"
    log = host.root / "crun.log"
    with faults.crun_failing(host, message='boom: "quoted" 100%', path=str(crun),
                             journal=journal) as fault:
        assert '"boom: \\"quoted\\" 100%"' in fault.details["observed"]  # the self-probe
        res = host.sudo(f"{crun} --root /run/x --log {log} --log-format=json run --bundle "
                        "/b ctr", check=False)
        assert res.rc == 1 and res.stderr.strip() == 'boom: "quoted" 100%'
        entry = json.loads(log.read_text().splitlines()[-1])
        assert entry["msg"] == 'boom: "quoted" 100%' and entry["level"] == "error"
        assert entry["time"].endswith("Z")
        res = host.sudo(f"{crun} --log=file:{log}2 create ctr", check=False)
        assert res.rc == 1 and json.loads(Path(f"{log}2").read_text())["msg"]
        assert host.sudo(f"{crun} --version").stdout.strip() == "crun version 1.8.1"
        host.sudo(f"{crun} --root /run/x --log {log} kill ctr SIGTERM")
        assert "kill ctr SIGTERM" in calls.read_text()
        assert "run --bundle" not in calls.read_text()
    assert crun.read_text() == REAL_CRUN
    assert leftovers(host) == []


def test_crun_failing_refuses_over_an_unhealed_wrapper(host, journal):
    crun = host.root / "usr" / "bin" / "crun"
    unhealed = faults.crun_failing(host, path=str(crun), journal=journal)
    unhealed.__enter__()
    with pytest.raises(faults.FaultError, match="not healed"):
        with faults.crun_failing(host, path=str(crun), journal=journal):
            pass
    faults.sweep(host, roots=[str(host.root)])
    assert crun.read_text() == REAL_CRUN


def test_crun_failing_validates_subcommands(host):
    with pytest.raises(faults.FaultError, match="subcommands"):
        with faults.crun_failing(host, on=("run; rm -rf /",)):
            pass


# -- network ---------------------------------------------------------------------------------
def test_network_delay_on_a_port_shapes_only_that_port(host, journal):
    with faults.network_delay(host, 100, jitter_ms=10, loss_pct=5, port=8080,
                              journal=journal) as fault:
        tc = host.tc()
        kinds = {(q["kind"], q["handle"], q["parent"]) for q in tc["qdiscs"]}
        assert kinds == {("prio", "1ab:", "root"), ("netem", "1ac:", "1ab:3")}
        assert [q["args"] for q in tc["qdiscs"] if q["kind"] == "netem"] == [
            "delay 100ms 10ms loss 5%"]
        assert "priomap " + " ".join(["0"] * 16) in tc["qdiscs"][0]["args"]
        assert sorted(f.split(" match ip ")[1] for f in tc["filters"]) == [
            "dport 8080 0xffff flowid 1ab:3", "sport 8080 0xffff flowid 1ab:3"]
        assert "netem" in fault.details["observed"]
    assert host.tc()["qdiscs"] == []
    assert any("netem.sh modules sch_netem sch_prio cls_u32" in c for c in host.commands)


def test_network_delay_without_port_is_one_netem_root(host, journal):
    with faults.network_delay(host, delay_ms=0, loss_pct=20, journal=journal):
        (qdisc,) = host.tc()["qdiscs"]
        assert (qdisc["kind"], qdisc["handle"], qdisc["args"]) == ("netem", "1ab:", "loss 20%")
    assert host.tc()["qdiscs"] == []


def test_network_delay_names_a_missing_kernel_module_and_changes_nothing(host, journal):
    host.env["FAKE_MISSING_MODULES"] = "sch_netem"
    with pytest.raises(faults.FaultError, match="sch_netem.*not found"):
        with faults.network_delay(host, 100, journal=journal):
            pass
    assert host.tc()["qdiscs"] == [] and heal_scripts() == []


def test_a_failed_injection_is_healed_and_reported(host, journal):
    host.env["FAKE_TC_FAIL"] = "filter add"
    with pytest.raises(CommandFailed, match="RTNETLINK"):
        with faults.network_delay(host, 100, port=9000, journal=journal):
            pytest.fail("the body must not run")
    assert host.tc()["qdiscs"] == []  # the half-made prio/netem pair is gone
    (record,) = journal.records()
    assert record.error.startswith("not injected") and record.healed_at


def test_network_delay_validates_its_arguments(host):
    for kwargs in ({"delay_ms": 0}, {"delay_ms": -1}, {"delay_ms": 5, "loss_pct": 101}):
        with pytest.raises(faults.FaultError):
            with faults.network_delay(host, **kwargs):
                pass


def test_connection_resets_tags_its_rule_and_removes_it(host, journal):
    with faults.connection_resets(host, 8080, every=3, journal=journal) as fault:
        ((chain, spec),) = host.iptables()
        assert chain == "INPUT"
        assert spec.startswith("-p tcp --dport 8080 -m statistic --mode nth --every 3 --packet 2")
        assert "--comment lab-fault:" in spec and spec.endswith("--reject-with tcp-reset")
        assert fault.details["rule"] == spec
    assert host.iptables() == []
    with faults.connection_resets(host, 8080, new_only=True, journal=journal):
        assert "--dport 8080 --syn -m comment" in host.iptables()[0][1]
    assert host.iptables() == []


# -- plugin ----------------------------------------------------------------------------------
@pytest.fixture
def plugin_binary(host, tmp_path):
    if faults.plugin_pids(host):
        pytest.skip("a real nomad-driver-java-crun runs on this machine: not killing it")
    binary = tmp_path / "plugins" / faults.PLUGIN_BINARY
    binary.parent.mkdir()
    shutil.copy("/bin/cat", binary)  # with no arguments it waits on stdin: a live "plugin"
    return binary


def _spawn(argv, **env):
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            env={"PATH": "/usr/bin:/bin", **env})


def test_kill_plugin_kills_the_plugin_not_its_shims(host, journal, plugin_binary, tmp_path):
    plugin = _spawn([str(plugin_binary)])
    shim_env = _spawn([str(plugin_binary)], _JAVA_CRUN_SHIM="1")  # shim by environment
    shim_arg = _spawn([str(plugin_binary), "-"])  # shim by argument (cat - waits on stdin)
    try:
        assert faults.plugin_pids(host) == [plugin.pid]
        assert faults.kill_plugin(host, journal=journal) == plugin.pid
        assert plugin.wait(timeout=5) == -9
        assert shim_env.poll() is None and shim_arg.poll() is None
        (record,) = journal.records()
        assert record.name == "plugin_killed" and record.active
        relaunched = _spawn([str(plugin_binary)])
        try:
            assert faults.wait_plugin_restarted(host, plugin.pid, timeout=5,
                                                journal=journal) == relaunched.pid
        finally:
            relaunched.kill()
            relaunched.wait()
        assert not record.active and record.details["new_pid"] == relaunched.pid
    finally:
        for proc in (plugin, shim_env, shim_arg):
            proc.kill()
            proc.wait()


def test_kill_plugin_without_a_plugin_says_so(host, plugin_binary):
    with pytest.raises(faults.FaultError, match="no nomad-driver-java-crun process"):
        faults.kill_plugin(host)


def test_wait_plugin_restarted_times_out_naming_the_pids(host, plugin_binary):
    started = time.monotonic()
    with pytest.raises(LabTimeout, match="restarted by Nomad"):
        faults.wait_plugin_restarted(host, 123456, timeout=0.3)
    assert time.monotonic() - started < 3


# -- journal ---------------------------------------------------------------------------------
def test_journal_summary_names_each_fault_and_its_state(host, journal):
    with faults.crun_missing(host, path=str(host.root / "usr/bin/crun"), journal=journal):
        assert "ACTIVE" in journal.summary()
        assert len(journal.active()) == 1
    summary = journal.summary()
    assert "crun_missing@sandbox" in summary and "healed" in summary
    assert journal.active() == []
    assert textwrap.dedent(summary).count("\n") == 0
