"""lab.checks.probes: what the helpers send to the lab host and how they read the answers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from fakes import bash_syntax_errors

from lab.checks import probes
from lab.core.errors import LabTimeout

AGENT = SimpleNamespace(dir="/var/lib/nomad-lab/nomad-lab-r1-3", ports={"http": 24646},
                        crun_root="/run/java-crun/nomad-lab-r1-3/crun")
ALLOC = "0b6c3b1e-5a57-7d5e-1c1a-0e1f00000001"


def state(cid: str, status: str = "running", pid: int = 4242) -> str:
    return json.dumps({"ociVersion": "1.0.0", "id": cid, "pid": pid, "status": status,
                       "bundle": f"/run/java-crun/x/bundles/{cid}", "created": "now",
                       "owner": "root"}, indent=2)


# -- crun ------------------------------------------------------------------------------------
def test_crun_containers_reads_every_state_in_one_round_trip(host):
    host.on("state", state(f"{ALLOC}.app.0", pid=11) + "\n" + state("other.app", "stopped", 0))
    found = probes.crun(host, AGENT).containers()
    assert found == [probes.Container(f"{ALLOC}.app.0", "running", 11,
                                      f"/run/java-crun/x/bundles/{ALLOC}.app.0"),
                     probes.Container("other.app", "stopped", 0,
                                      "/run/java-crun/x/bundles/other.app")]
    (call,) = host.calls
    assert call.sudo and f"crun --root {AGENT.crun_root} list -q" in call.cmd
    assert not bash_syntax_errors(call.cmd)


def test_crun_running_and_of_alloc(host):
    host.on("state", state(f"{ALLOC}.app.0", pid=11) + state("other.app", "stopped", 0))
    crun = probes.crun(host, AGENT)
    assert crun.running() == {f"{ALLOC}.app.0": 11}
    assert crun.of_alloc(ALLOC).pid == 11
    with pytest.raises(AssertionError, match="crun containers of alloc nope"):
        crun.of_alloc("nope")


def test_crun_with_no_containers_and_ids(host):
    assert probes.crun(host, AGENT).containers() == []
    host.on("list -q", "a\nb\n")
    assert probes.crun(host, AGENT).ids() == ["a", "b"]


def test_parse_states_reads_concatenated_documents():
    assert [s["id"] for s in probes.parse_states(state("a") + state("b") + "\n")] == ["a", "b"]
    assert probes.parse_states("  \n") == []


# -- files -----------------------------------------------------------------------------------
def test_file_reads_mode_owner_size_type_and_sha256(host):
    host.on("stat -c", "4755 root daemon 1234 regular file\n" + "ab" * 32 + "  /x/a.jar\n")
    info = probes.file(host, "/x/a.jar", checksum=True)
    assert info == probes.FileInfo("/x/a.jar", True, 0o4755, "root", "daemon", 1234,
                                   "regular file", "ab" * 32)
    assert info.is_file
    assert "sha256sum -- /x/a.jar" in host.calls[0].cmd and host.calls[0].sudo
    assert not bash_syntax_errors(host.calls[0].cmd)


def test_file_without_checksum_and_a_missing_file(host):
    host.on("stat -c", "755 nobody nogroup 0 directory\n")
    info = probes.file(host, "/x/dir with space")
    assert (info.mode, info.type, info.sha256, info.is_file) == (0o755, "directory", None, False)
    assert "sha256sum" not in host.calls[0].cmd and "'/x/dir with space'" in host.calls[0].cmd
    host.on("stat -c", "missing\n")
    assert probes.file(host, "/nope") == probes.FileInfo("/nope", False)


def test_files_reads_several_in_one_round_trip(host):
    host.on("stat -c", "## 0\n600 root root 10 regular file\n## 1\nmissing\n")
    found = probes.files(host, ["/etc/shadow", "/etc/nope"])
    assert found["/etc/shadow"].size == 10 and not found["/etc/nope"].exists
    assert len(host.calls) == 1 and not bash_syntax_errors(host.calls[0].cmd)


# -- directories, processes, cgroups -----------------------------------------------------------
def test_alloc_and_task_dirs_are_under_the_agents_data_dir():
    assert probes.alloc_dir(AGENT, ALLOC) == f"{AGENT.dir}/data/alloc/{ALLOC}"
    assert probes.task_dir(AGENT, ALLOC, "reader") == f"{AGENT.dir}/data/alloc/{ALLOC}/reader"


def test_process_reads_pid_namespace_and_cgroup(host):
    host.on("readlink /proc/42/ns/pid", "pid:[4026532301]\n/nomad.slice/a.app.scope/container\n")
    assert probes.process(host, 42) == probes.Process(42, "pid:[4026532301]",
                                                      "/nomad.slice/a.app.scope/container")


def test_cgroup_value_and_process_count(host):
    host.on("memory.max", "201326592\n").on("ls /proc", "57\n")
    assert probes.cgroup_value(host, "/nomad.slice/a.scope", "memory.max") == "201326592"
    assert "/sys/fs/cgroup/nomad.slice/a.scope/memory.max" in host.calls[0].cmd
    assert probes.process_count(host) == 57


# -- ports -----------------------------------------------------------------------------------
SS = """\
LISTEN 0 4096 *:4646 *:* users:(("systemd-socket-",pid=812,fd=3))
LISTEN 0 4096 127.0.0.1:24646 0.0.0.0:* users:(("nomad",pid=900,fd=9),("nomad",pid=901,fd=9))
LISTEN 0 4096 [::]:4647 [::]:* users:(("systemd-socket-",pid=812,fd=4))
"""


def test_listeners_names_who_listens_on_each_port(host):
    host.on("ss -Htlnp", SS)
    assert probes.listeners(host, [4646, 4647, 4648, 24646]) == {
        4646: {"systemd-socket"}, 4647: {"systemd-socket"}, 24646: {"nomad"}}
    assert "'sport = :4646 or sport = :4647 or sport = :4648 or sport = :24646'" in \
        host.calls[0].cmd
    assert probes.listening(host, 24646) and not probes.listening(host, 4648)


def test_occupy_ports_waits_for_the_listeners_and_always_stops_the_unit(host):
    host.on("ss -Htlnp", "", SS)
    with pytest.raises(RuntimeError), probes.occupy_ports(host, [4646, 4647], "lab-ports-r1",
                                                          timeout=30) as unit:
        assert unit.startswith("lab-ports-r1-")
        raise RuntimeError("the test failed")
    assert "systemd-socket-activate -l 4646 -l 4647 sleep infinity" in host.commands[0]
    assert host.ran(f"systemctl stop {unit}") and host.ran(f"reset-failed {unit}")


def test_occupy_ports_gives_up_at_its_deadline_and_stops_the_unit(host):
    with pytest.raises(LabTimeout), probes.occupy_ports(host, [4646], "lab-ports", timeout=0.3):
        pass
    assert host.ran("systemctl stop lab-ports-")


# -- units -----------------------------------------------------------------------------------
def test_unit_active_and_stop_unit(host):
    host.on("is-active", rc=3)
    assert not probes.unit_active(host, "nomad-lab-r1-1.service")
    probes.stop_unit(host, "u.service", kill=True)
    assert host.commands[-1].startswith("systemctl kill --signal=KILL u.service; "
                                        "systemctl stop u.service")
    assert host.calls[-1].check is False


# -- tc --------------------------------------------------------------------------------------
TC = """\
qdisc prio 1ab: root refcnt 2 bands 3 priomap 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 Sent 9000 bytes 80 pkt (dropped 0, overlimits 0 requeues 0)
 backlog 0b 0p requeues 0
qdisc netem 1ac: parent 1ab:3 limit 1000 delay 100ms  20ms loss 15%
 Sent 4200000 bytes 3100 pkt (dropped 412, overlimits 0 requeues 0)
"""


def test_qdisc_stats_reads_the_counters_of_the_named_qdisc(host):
    host.on("tc -s qdisc show dev lo", TC)
    assert probes.qdisc_stats(host) == {"bytes": 4200000, "packets": 3100, "dropped": 412,
                                        "overlimits": 0}
    assert probes.qdisc_stats(host, "prio")["packets"] == 80


def test_qdisc_stats_fails_when_there_is_no_such_qdisc(host):
    host.on("tc -s", "qdisc noqueue 0: root refcnt 2\n Sent 0 bytes 0 pkt (dropped 0, "
                     "overlimits 0 requeues 0)\n")
    with pytest.raises(AssertionError, match="no netem qdisc statistics on lo"):
        probes.qdisc_stats(host)


# -- exec ------------------------------------------------------------------------------------
def test_exec_in_task_goes_through_nomad_alloc_exec_of_the_agent(host):
    host.on("alloc exec", "out\n", rc=5)
    res = probes.exec_in_task(host, AGENT, ALLOC, ["sh", "-c", "echo hi; exit 5"], task="web")
    assert (res.rc, res.stdout) == (5, "out\n")
    (call,) = host.calls
    assert call.cmd == (f"/opt/lab/bin/nomad alloc exec -address=http://127.0.0.1:24646 "
                        f"-i=false -t=false -task web {ALLOC} sh -c 'echo hi; exit 5'")
    assert not call.sudo and not call.check


def test_sha256_in_task_maps_paths_to_digests(host):
    host.on("sha256sum", f"{'a' * 64}  /local/app.jar\n{'b' * 64}  /local/conf/d.bin\n")
    assert probes.sha256_in_task(host, AGENT, ALLOC, ["/local/app.jar", "/local/conf/d.bin"]) \
        == {"/local/app.jar": "a" * 64, "/local/conf/d.bin": "b" * 64}


def test_sha256_in_task_fails_with_what_the_command_said(host):
    host.on("sha256sum", rc=1, stderr="sha256sum: /local/x: Permission denied\n")
    with pytest.raises(AssertionError, match="exited 1: sha256sum: /local/x: Permission denied"):
        probes.sha256_in_task(host, AGENT, ALLOC, ["/local/x"])
