"""agent: the rendered HCL, readiness under one deadline, fail-fast on a dead unit, stop/remains."""

from __future__ import annotations

import base64
import json
import re
import shlex
import subprocess
import time

import pytest
from fakes import (
    HEALTHY,
    FakeApi,
    FakeNomadServer,
    Text,
    alloc,
    bash_syntax_errors,
    cluster_state,
)

from lab.core.config import ROOT
from lab.core.errors import LabError, LabTimeout
from lab.nomad import agent as agent_mod
from lab.nomad.agent import AgentOptions, NomadAgent, render_config
from lab.nomad.api import ApiError
from lab.remote import layout
from lab.remote.host import CommandResult
from lab.remote.layout import AGENTS_ROOT, DRIVER, NOMAD_BIN, PLUGIN_BINARY, PLUGIN_DIR, state_root

PORTS = {"http": 24646, "rpc": 24647, "serf": 24648}


# -- a parser for the HCL subset render_config writes ---------------------------------------


def parse_hcl(text: str) -> dict:
    """Blocks (`name "label" {`), maps (`key = {`), `key = <json>` attributes, `}`.

    Anything else, a duplicate key or unbalanced braces fails: the rendering must stay in the
    subset this understands, which is valid HCL.
    """
    root: dict = {}
    stack = [root]
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line == "}":
            stack.pop()
            assert stack, f"unbalanced '}}' at {raw!r}"
            continue
        if m := re.fullmatch(r'(\w+)((?:\s+"[^"]*")*)\s*\{', line):
            node = stack[-1]
            for key in (m[1], *re.findall(r'"([^"]*)"', m[2])):
                node = node.setdefault(key, {})
            stack.append(node)
            continue
        m = re.fullmatch(r'("[^"]+"|\w+)\s*=\s*(.+)', line)
        assert m, f"not in the rendered HCL subset: {raw!r}"
        key = m[1].strip('"')
        assert key not in stack[-1], f"duplicate key {key!r}"
        if m[2] == "{":
            stack[-1][key] = {}
            stack.append(stack[-1][key])
        else:
            stack[-1][key] = json.loads(m[2])
    assert len(stack) == 1, "unbalanced braces: a block is not closed"
    return root


def test_parse_hcl_rejects_broken_input():
    with pytest.raises(AssertionError, match="unbalanced"):
        parse_hcl("client {\n enabled = true\n")
    with pytest.raises(AssertionError, match="duplicate"):
        parse_hcl("a = 1\na = 2\n")


# -- render_config ---------------------------------------------------------------------------


def rendered(options: AgentOptions | None = None) -> dict:
    return parse_hcl(render_config("nomad-lab-abc123-1", "/var/lib/nomad-lab/nomad-lab-abc123-1",
                                   PORTS, options or AgentOptions()))


def test_render_config_binds_everything_to_loopback_with_our_ports_and_dirs():
    cfg = rendered()
    assert cfg["name"] == "nomad-lab-abc123-1"
    assert cfg["data_dir"] == "/var/lib/nomad-lab/nomad-lab-abc123-1/data"
    assert cfg["plugin_dir"] == PLUGIN_DIR
    assert cfg["bind_addr"] == "127.0.0.1"
    assert cfg["ports"] == PORTS
    assert cfg["advertise"] == {"http": "127.0.0.1", "rpc": "127.0.0.1", "serf": "127.0.0.1"}
    assert cfg["server"]["enabled"] is True and cfg["server"]["bootstrap_expect"] == 1
    assert cfg["server"]["default_scheduler_config"]["memory_oversubscription_enabled"] is True, \
        "without it Nomad ignores a task's memory_max"
    assert cfg["client"]["enabled"] is True
    assert cfg["client"]["servers"] == ["127.0.0.1:24647"]
    assert cfg["client"]["network_interface"] == "lo"


def test_render_config_never_phones_out():
    cfg = rendered()
    assert cfg["disable_update_check"] is True
    denied = cfg["client"]["options"]["fingerprint.denylist"].split(",")
    assert {"env_aws", "env_gce", "env_azure", "env_digitalocean"} <= set(denied)
    text = render_config("x", "/d", PORTS, AgentOptions())
    assert set(re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", text)) == {"127.0.0.1"}
    # With group networks, besides loopback only the bridge subnet: a network inside the lab
    # host (its own containers); the agent advertises and binds nothing on it.
    text = render_config("x", "/d", PORTS, AgentOptions(group_networks=True))
    assert set(re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", text)) == \
        {"127.0.0.1", agent_mod.BRIDGE_SUBNET.split("/")[0]}


def test_render_config_loads_our_plugin_with_a_short_fingerprint_period():
    cfg = rendered(AgentOptions(fingerprint_period="250ms"))
    plugin = cfg["plugin"][PLUGIN_BINARY]["config"]
    assert plugin["fingerprint_period"] == "250ms"
    assert plugin["state_root"] == f"{layout.CRUN_STATE_ROOT}/nomad-lab-abc123-1", \
        "each agent's driver has its own state root"
    assert list(cfg["plugin"]) == [PLUGIN_BINARY], "Nomad >= 1.10 loads only named plugins"


def test_render_config_plugin_config_values_keep_their_types():
    cfg = rendered(AgentOptions(plugin_config={"allow_caps": ["chown"], "debug": True,
                                               "gc_interval": 3}))
    plugin = cfg["plugin"][PLUGIN_BINARY]["config"]
    assert plugin["allow_caps"] == ["chown"] and plugin["debug"] is True
    assert plugin["gc_interval"] == 3


def test_render_config_artifact_block_carries_the_options_escaped():
    artifact = {"http_read_timeout": "5s", "http_max_size": "1MB",
                "decompression_size_limit": 'odd "quoted" \\ value'}
    assert rendered(AgentOptions(artifact=artifact))["client"]["artifact"] == artifact
    assert rendered()["client"]["artifact"] == {}


def test_render_config_log_level():
    assert rendered(AgentOptions(log_level="TRACE"))["log_level"] == "TRACE"


NOMAD = ROOT / "build" / "nomad"


@pytest.mark.skipif(not NOMAD.exists(), reason="build/nomad not built (./invoke plugin.build)")
@pytest.mark.parametrize("options", [
    AgentOptions(),
    AgentOptions(artifact={"http_read_timeout": "5s", "http_max_size": "10MB"},
                 plugin_config={"debug": True}),
    AgentOptions(host_volumes={"data": False, "ro": True}),
])
def test_rendered_config_passes_nomad_config_validate(tmp_path, options):
    path = tmp_path / "agent.hcl"
    path.write_text(render_config("nomad-lab-abc123-1", str(tmp_path), PORTS, options))
    res = subprocess.run([str(NOMAD), "config", "validate", str(path)], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Configuration is valid" in res.stdout


# -- readiness: agent-start.sh, run for real against a fake Nomad -----------------------------

NAME = "nomad-lab-abc123-1"


@pytest.fixture
def fake_systemd(tmp_path):
    """systemd-run and systemctl stand-ins on PATH: the unit's main pid is the one in the
    file `mainpid` (this test process unless a test writes another)."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "mainpid").write_text(str(os.getpid()))
    (bin_dir / "systemd-run").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/launched\n")
    (bin_dir / "systemctl").write_text(f"#!/bin/sh\ncat {tmp_path}/mainpid\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return tmp_path


def run_script(fake_systemd, port: int, mode: str = "dev", timeout_s: int = 20,
               config: str = "name = 1\n") -> subprocess.CompletedProcess:
    import base64
    import os

    env = {**os.environ, "PATH": f"{fake_systemd / 'bin'}:{os.environ['PATH']}"}
    args = [NAME + ".service", str(fake_systemd / "agent"), str(port), NAME, DRIVER,
            str(timeout_s), mode, base64.b64encode(config.encode()).decode(), "/opt/nomad"]
    script = (ROOT / "lab" / "remote" / "scripts" / "agent-start.sh").read_text()
    return subprocess.run(["bash", "-c", script, "agent-start", *args],
                          env=env, capture_output=True, text=True, timeout=timeout_s + 10)


def nomad_routes(nomad, leader=(200, "127.0.0.1:4647"), status="ready", drivers=None):
    nomad.route("GET", "/v1/status/leader", *([leader] if isinstance(leader, tuple) else leader))
    drivers = HEALTHY if drivers is None else drivers
    nomad.route("GET", "/v1/nodes", (200, [{"ID": "n1", "Name": NAME, "Status": status,
                                            "Drivers": drivers},
                                           {"ID": "n0", "Name": "someone-else",
                                            "Status": "ready", "Drivers": HEALTHY}]))
    nomad.route("GET", "/v1/node/n1", (200, {"ID": "n1", "Status": status, "Drivers": drivers}))


def test_start_script_launches_the_unit_and_walks_every_step_to_healthy(fake_systemd):
    with FakeNomadServer() as nomad:
        nomad_routes(nomad, leader=[(500, Text("No cluster leader")), (200, ""),
                                    (200, "127.0.0.1:4647")])
        res = run_script(fake_systemd, nomad.port, config="name = \"x\"\n")
    assert res.returncode == 0, res.stdout + res.stderr
    steps, node_id, last = agent_mod.parse_start_output(res.stdout)
    assert list(steps) == list(agent_mod.STEPS), res.stdout
    assert sorted(steps.values()) == list(steps.values()), "steps come in order"
    assert node_id == "n1" and last == ""
    launched = (fake_systemd / "launched").read_text()
    assert f"--unit={NAME}.service" in launched and "KillMode=process" in launched
    assert f"/opt/nomad agent -dev -config={fake_systemd}/agent/agent.hcl" in launched
    assert (fake_systemd / "agent" / "agent.hcl").read_text() == 'name = "x"\n'


def test_render_config_declares_host_volumes_in_the_agents_own_dir():
    hcl = render_config(NAME, "/var/lib/nomad-lab/x", PORTS,
                        AgentOptions(host_volumes={"data": False, "ro": True}))
    assert 'host_volume "data" {\n    path      = "/var/lib/nomad-lab/x/volumes/data"\n' \
           '    read_only = false' in hcl
    assert 'path      = "/var/lib/nomad-lab/x/volumes/ro"\n    read_only = true' in hcl
    assert "host_volume" not in render_config(NAME, "/x", PORTS, AgentOptions())


def test_render_config_gives_cni_only_to_agents_for_group_networks():
    """Nomad runs every CNI plugin at each agent start: seconds under TCG."""
    hcl = render_config(NAME, "/x", PORTS, AgentOptions(group_networks=True))
    assert f'cni_path              = "{agent_mod.CNI_PATH}"' in hcl
    assert f'bridge_network_subnet = "{agent_mod.BRIDGE_SUBNET}"' in hcl
    assert "plugins_cni" not in hcl
    plain = render_config(NAME, "/x", PORTS, AgentOptions())
    assert "cni_path" not in plain and "bridge_network_subnet" not in plain
    assert re.search(r'"fingerprint.denylist" = "[^"]*,cni,plugins_cni"', plain), plain


def test_start_script_creates_the_host_volume_dirs_writable_for_any_task_user(fake_systemd):
    agent_dir = fake_systemd / "agent"
    config = render_config(NAME, str(agent_dir), PORTS, AgentOptions(host_volumes={"d": False}))
    with FakeNomadServer() as nomad:
        nomad_routes(nomad)
        assert run_script(fake_systemd, nomad.port, config=config).returncode == 0
    assert oct((agent_dir / "volumes" / "d").stat().st_mode & 0o7777) == "0o1777"


def test_start_script_persist_mode_is_not_dev_and_wait_mode_launches_nothing(fake_systemd):
    with FakeNomadServer() as nomad:
        nomad_routes(nomad)
        assert run_script(fake_systemd, nomad.port, mode="persist").returncode == 0
        launched = (fake_systemd / "launched").read_text()
        assert "agent -config=" in launched and "-dev" not in launched
        (fake_systemd / "launched").unlink()
        res = run_script(fake_systemd, nomad.port, mode="wait")
    assert res.returncode == 0 and not (fake_systemd / "launched").exists()


@pytest.mark.parametrize("routes, seen", [
    ({"leader": (500, Text("No cluster leader"))}, "HTTP port"),
    ({"leader": (200, "")}, "no leader elected yet"),
    ({"status": "initializing"}, "node status=initializing"),
    ({"drivers": {"docker": {}}}, "driver java-crun not fingerprinted yet"),
    ({"drivers": {DRIVER: {"Detected": True, "Healthy": False,
                           "HealthDescription": "java runtime not usable: exit 1"}}},
     "driver java-crun Detected/Healthy: true false java runtime not usable: exit 1"),
])
def test_start_script_deadline_names_the_last_state(fake_systemd, routes, seen):
    with FakeNomadServer() as nomad:
        nomad_routes(nomad, **routes)
        res = run_script(fake_systemd, nomad.port, timeout_s=1)
    assert res.returncode == 4, res.stdout + res.stderr
    assert seen in agent_mod.parse_start_output(res.stdout)[2], res.stdout


def test_start_script_fails_at_once_when_the_unit_dies(fake_systemd):
    """The agent dies while it is still electing: exit 3 now, not at the deadline."""
    with FakeNomadServer() as nomad:
        nomad_routes(nomad, leader=(200, ""))
        # Not our child (a zombie answers kill -0): a sleep whose parent shell has exited.
        doomed = subprocess.run(["sh", "-c", "sleep 0.5 >/dev/null & echo $!"],
                                capture_output=True, text=True).stdout.strip()
        (fake_systemd / "mainpid").write_text(doomed)
        started = time.monotonic()
        res = run_script(fake_systemd, nomad.port, mode="wait", timeout_s=60)
    assert res.returncode == 3, res.stdout + res.stderr
    assert time.monotonic() - started < 10
    assert agent_mod.parse_start_output(res.stdout)[2] == "HTTP up; no leader elected yet"


def test_the_lab_hosts_scripts_pass_shellcheck():
    import shutil

    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed (apt-get install shellcheck; lab.up installs it)")
    scripts = sorted((ROOT / "lab" / "remote" / "scripts").glob("*.sh"))
    assert len(scripts) >= 7, scripts  # agent start and stop, bare agent, scan, ...
    res = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


# -- NomadAgent over the script's answers ------------------------------------------------------

READY_OUTPUT = "".join(f"step {100 * (i + 1)} {s}\n" for i, s in enumerate(agent_mod.STEPS)) \
    + "node node-0001\n"
LOG_TAIL = "==> Nomad agent started!\n[ERROR] plugin: java runtime not usable: exit 1\n"


def script_answers(host, *answers) -> None:
    host.on("agent-start", *answers)
    host.on("tail -n 40", LOG_TAIL)


def test_agent_names_are_tagged_with_the_run_id(host):
    agent = NomadAgent(host, "abc123", 7, ready_timeout=1, stop_timeout=1)
    assert agent.id == "nomad-lab-abc123-7"
    assert agent.unit == "nomad-lab-abc123-7.service"
    assert agent.dir == f"{AGENTS_ROOT}/nomad-lab-abc123-7"
    assert agent.log_path == f"{AGENTS_ROOT}/nomad-lab-abc123-7/agent.log"
    assert agent.crun_root == f"{layout.CRUN_STATE_ROOT}/nomad-lab-abc123-7/crun"


@pytest.mark.parametrize("rc, last, error, text", [
    (4, "node status=initializing", LabTimeout, "timed out after 10.0s waiting for Nomad agent"),
    (3, "HTTP up; no leader elected yet", LabError, "is not running"),
])
def test_a_failed_start_says_what_was_seen_with_the_log_tail_and_tears_down(
        host, fake_labapi, rc, last, error, text):
    script_answers(host, CommandResult("", rc, f"step 5 unit_started\nlast {last}\n", ""))
    agent = NomadAgent(host, "abc123", 1, ready_timeout=10, stop_timeout=30)
    with pytest.raises(error) as info:
        agent.start()
    msg = str(info.value)
    assert text in msg and last in msg, msg
    assert f"agent log tail ({agent.log_path}):" in msg and "java runtime not usable" in msg
    assert host.open_tunnels == 0
    assert stop_args(host) == [agent.unit, agent.dir, state_root(agent.id), "kill"]


# -- start, stop, remains --------------------------------------------------------------------


@pytest.fixture
def fake_labapi(monkeypatch):
    made = []

    def factory(host, port, timeout=15):
        api = FakeApi(cluster=made_cluster[0])
        api.address = (host, port, timeout)
        made.append(api)
        return api

    made_cluster = [[cluster_state(drivers=HEALTHY)]]
    monkeypatch.setattr(agent_mod, "LabApi", factory)
    factory.made, factory.cluster = made, made_cluster
    return factory


def test_start_renders_launches_tunnels_and_waits(host, fake_labapi):
    host.on("ss -Htanu", "127.0.0.1:22\n")
    script_answers(host, READY_OUTPUT)
    agent = NomadAgent(host, "abc123", 1, ready_timeout=60, stop_timeout=30, api_timeout=9)
    assert agent.start() is agent

    assert sorted(agent.ports) == ["http", "rpc", "serf"] and len(set(agent.ports.values())) == 3
    (launch,) = host.ran("agent-start")
    assert launch.sudo
    args = shlex.split(launch.cmd)[4:]
    assert args[:7] == [agent.unit, agent.dir, str(agent.ports["http"]), agent.id, DRIVER, "60",
                        "dev"], args
    cfg = parse_hcl(base64.b64decode(args[7]).decode())
    assert cfg["ports"] == agent.ports and cfg["name"] == agent.id
    assert args[8] == NOMAD_BIN
    assert host.tunnels == [agent.ports["http"]] and host.open_tunnels == 1
    (api,) = fake_labapi.made
    assert api.address == ("127.0.0.1", 40001, 9) and agent.api is api
    assert agent.node_id == "node-0001" and agent.startup_seconds >= 0
    assert agent.timeline == pytest.approx(
        {s: 0.1 * (i + 1) for i, s in enumerate(agent_mod.STEPS)})

    assert agent.stop() == []
    assert host.open_tunnels == 0
    assert stop_args(host) == [agent.unit, agent.dir, state_root(agent.id), "kill"]


def test_a_persisting_agent_is_started_in_persist_mode(host, fake_labapi):
    script_answers(host, READY_OUTPUT)
    NomadAgent(host, "abc123", 1, ready_timeout=60, stop_timeout=30,
               options=AgentOptions(persist=True)).start()
    (launch,) = host.ran("agent-start")
    assert shlex.split(launch.cmd)[4:][6] == "persist"


def stop_args(host) -> list[str]:
    (call,) = host.ran("agent-stop.sh")
    assert call.sudo
    return shlex.split(call.cmd)[4:]


def test_stop_reports_what_remains(host):
    agent = NomadAgent(host, "abc123", 1, ready_timeout=1, stop_timeout=1)
    left = f"unit:{agent.unit}\ndir:{agent.dir}\n"
    host.on("agent-stop.sh", left)
    assert agent.stop(check=False, graceful=True) == [f"unit:{agent.unit}", f"dir:{agent.dir}"]
    assert stop_args(host)[-1] == "graceful"
    with pytest.raises(LabError) as info:
        agent.stop()
    assert f"dir:{agent.dir}" in str(info.value) and "invoke lab.clean" in str(info.value)


def run_stop_script(tmp_path, containers: str = "",
                    unit_procs: str | None = None) -> subprocess.CompletedProcess:
    """agent-stop.sh run by a real bash, with systemctl and crun stand-ins on PATH."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text("#!/bin/sh\n[ \"$1\" = is-active ] && exit 3\nexit 0\n")
    (bin_dir / "crun").write_text(f"#!/bin/sh\nprintf '{containers}'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    agent_dir, root = tmp_path / "agent", tmp_path / "state"
    (agent_dir / "data").mkdir(parents=True)
    (root / "crun").mkdir(parents=True)
    for name in containers.split("\\n"):  # crun's root holds a directory per container
        if name:
            (root / "crun" / name).mkdir()
    cgroups = tmp_path / "cgroup"
    if unit_procs is not None:  # the unit's cgroup, with these processes still in it
        (cgroups / "system.slice" / "u.service").mkdir(parents=True)
        (cgroups / "system.slice" / "u.service" / "cgroup.procs").write_text(unit_procs)
    script = (ROOT / "lab" / "remote" / "scripts" / "agent-stop.sh").read_text()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CGROUP_ROOT": str(cgroups)}
    return subprocess.run(["bash", "-c", script, "agent-stop.sh", "u.service", str(agent_dir),
                           str(root), "kill"], env=env, capture_output=True, text=True,
                          timeout=20)


def test_stop_script_removes_the_dirs_and_finds_nothing_left(tmp_path):
    res = run_stop_script(tmp_path)
    assert res.returncode == 0 and res.stdout.split() == [], res.stdout + res.stderr
    assert not (tmp_path / "agent").exists() and not (tmp_path / "state").exists()


def test_stop_script_reports_a_unit_whose_cgroup_still_holds_a_process(tmp_path):
    """A process the KILL could not end (blocked in the kernel, like the hung-task fault's)."""
    res = run_stop_script(tmp_path, unit_procs="4242\n")
    assert res.stdout.split() == ["unit:u.service"], res.stdout + res.stderr


def test_stop_script_does_not_report_a_unit_whose_cgroup_is_empty(tmp_path):
    res = run_stop_script(tmp_path, unit_procs="")
    assert res.stdout.split() == [], res.stdout + res.stderr


def test_stop_script_keeps_a_state_root_that_still_holds_a_container(tmp_path):
    """A leaked container must stay visible to the leftover scan and the sweep."""
    res = run_stop_script(tmp_path, containers="3f2a.app\\n")
    assert res.stdout.split() == [f"state_root:{tmp_path / 'state'}"], res.stdout + res.stderr
    assert (tmp_path / "state" / "crun").exists()


def test_restart_restarts_the_unit_and_waits_again(host):
    script_answers(host, READY_OUTPUT)
    agent = NomadAgent(host, "abc123", 1, ready_timeout=60, stop_timeout=30)
    agent.ports = dict(PORTS)
    agent.restart()
    assert host.ran(f"systemctl restart {agent.unit}")[0].sudo
    (wait,) = host.ran("agent-start")
    assert shlex.split(wait.cmd)[4:][6] == "wait" and agent.node_id == "node-0001"


def test_every_command_the_agent_runs_parses_as_bash(host, fake_labapi):
    host.on("ss -Htanu", "")
    script_answers(host, READY_OUTPUT)
    agent = NomadAgent(host, "abc123", 1, ready_timeout=60, stop_timeout=30).start()
    agent.log_tail()
    agent.restart()
    agent.stop()
    assert len(host.calls) == 6, "ports, start, log tail, restart, wait, stop"
    for call in host.calls:
        assert bash_syntax_errors(call.cmd) == "", call.cmd


# -- drain -----------------------------------------------------------------------------------


def drain_agent(host, api) -> NomadAgent:
    agent = NomadAgent(host, "abc123", 1, ready_timeout=60, stop_timeout=20)
    agent.api = api
    return agent


def test_drain_purges_jobs_waits_for_allocations_then_gcs_and_waits_for_containers(
        host, fast_waits):
    api = FakeApi(jobs=["lab-abc123-a", "lab-abc123-b"], alloc_lists=[
        [alloc("running"), alloc("complete", alloc_id="ffff0000-1")],
        ApiError("allocations", "timeout"),
        [alloc("complete"), alloc("failed", alloc_id="ffff0000-1")]])
    host.on("crun --root /run/java-crun/nomad-lab-abc123-1/crun list -q", "3f2a.app\n", "")
    assert drain_agent(host, api).drain() == []
    assert api.called("deregister") == [("lab-abc123-a", True), ("lab-abc123-b", True)]
    methods = [m for m, _ in api.calls]
    assert methods.index("client_gc") > max(i for i, m in enumerate(methods)
                                            if m == "allocations")
    assert len(host.ran("crun --root")) == 2


def test_drain_reports_live_allocations_instead_of_raising(host, fast_waits):
    api = FakeApi(jobs=["j"], alloc_lists=[[alloc("running")]])
    (problem,) = drain_agent(host, api).drain()
    assert problem.startswith("draining agent nomad-lab-abc123-1 failed: timed out after 20.0s")
    assert "allocations still live: ['a1b2c3d4']" in problem
    assert api.called("client_gc") == []


def test_drain_reports_containers_that_survive_client_gc(host, fast_waits):
    host.on("crun --root", "container 3f2a.app\n")
    (problem,) = drain_agent(host, FakeApi(alloc_lists=[[]])).drain()
    assert "destroyed after client GC" in problem and "['container 3f2a.app']" in problem


def test_drain_waits_for_nomad_to_destroy_its_allocations_network_and_cgroups(host, fast_waits):
    # Nomad's postrun hooks remove a group network's namespace and the task cgroups after the
    # task is gone: an agent stopped before they ran would leave both behind.
    api = FakeApi(alloc_lists=[[]])
    api.seen_alloc_ids = {"5e6f7a8b-0000-4000-8000-000000000001"}
    left = "cgroup /sys/fs/cgroup/nomad.slice/share.slice/5e6f7a8b-0000-4000-8000-0000000000" \
           "01.app.scope\n"
    host.on("for a in 5e6f7a8b-0000-4000-8000-000000000001; do [ -e /var/run/netns/$a ]",
            "netns 5e6f7a8b-0000-4000-8000-000000000001\n" + left, left, "")
    assert drain_agent(host, api).drain() == []
    (check,) = {c.cmd for c in host.ran("/var/run/netns")}
    assert "/sys/fs/cgroup/nomad.slice/*/$a.*.scope" in check
    assert len(host.ran("/var/run/netns")) == 3


def test_drain_reports_a_cgroup_nomad_never_removed(host, fast_waits):
    api = FakeApi(alloc_lists=[[]])
    api.seen_alloc_ids = {"5e6f7a8b"}
    host.on("/var/run/netns", "cgroup /sys/fs/cgroup/nomad.slice/share.slice/5e6f7a8b.app.scope\n")
    (problem,) = drain_agent(host, api).drain()
    assert "network namespaces and cgroups of its allocations destroyed" in problem
    assert "5e6f7a8b.app.scope" in problem
