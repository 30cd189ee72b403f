"""agent: the rendered HCL, readiness under one deadline, fail-fast on a dead unit, stop/remains."""

from __future__ import annotations

import json
import re
import subprocess

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

from lab import agent as agent_mod
from lab.agent import (
    AGENTS_ROOT,
    DRIVER,
    NOMAD_BIN,
    PLUGIN_BINARY,
    PLUGIN_DIR,
    AgentOptions,
    NomadAgent,
    render_config,
)
from lab.api import ApiError, LabApi
from lab.config import ROOT
from lab.errors import LabError, LabTimeout

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


def test_render_config_loads_our_plugin_with_a_short_fingerprint_period():
    cfg = rendered(AgentOptions(fingerprint_period="250ms"))
    plugin = cfg["plugin"][PLUGIN_BINARY]["config"]
    assert plugin["fingerprint_period"] == "250ms"
    assert plugin["state_root"] == agent_mod.CRUN_STATE_ROOT
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
])
def test_rendered_config_passes_nomad_config_validate(tmp_path, options):
    path = tmp_path / "agent.hcl"
    path.write_text(render_config("nomad-lab-abc123-1", str(tmp_path), PORTS, options))
    res = subprocess.run([str(NOMAD), "config", "validate", str(path)], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Configuration is valid" in res.stdout


# -- readiness -------------------------------------------------------------------------------

LOG_TAIL = "==> Nomad agent started!\n[ERROR] plugin: java runtime not usable: exit 1\n"


def unit_active(host, *states: str, rc: int = 0) -> None:
    """Answer `systemctl is-active <unit>`; the remains probe (which also runs
    `systemctl is-active`) keeps finding nothing."""
    host.on("systemctl is-active", *states, rc=rc)
    host.on("echo unit:", "")


def http_listening(host) -> None:
    """Answer a readiness probe of the agent's HTTP port on the lab host (`ss -Htln`)."""

    def listening(cmd: str) -> str:
        port = re.search(r":(\d+)", cmd)
        return f"LISTEN 0 4096 127.0.0.1:{port[1]} 0.0.0.0:*\n" if port else ""

    host.on("ss -Htln", listening)


def make_agent(host, api=None, ready_timeout=60.0) -> NomadAgent:
    unit_active(host, "active\n")
    http_listening(host)
    host.on("tail -n 40", LOG_TAIL)
    agent = NomadAgent(host, "abc123", 1, ready_timeout=ready_timeout, stop_timeout=30)
    agent.ports = dict(PORTS)
    agent.api = api
    return agent


def unhealthy(description="java runtime not usable: exit 1"):
    return cluster_state(drivers={DRIVER: {"Detected": True, "Healthy": False,
                                           "HealthDescription": description}})


def test_agent_names_are_tagged_with_the_run_id(host):
    agent = NomadAgent(host, "abc123", 7, ready_timeout=1, stop_timeout=1)
    assert agent.id == "nomad-lab-abc123-7"
    assert agent.unit == "nomad-lab-abc123-7.service"
    assert agent.dir == f"{AGENTS_ROOT}/nomad-lab-abc123-7"
    assert agent.log_path == f"{AGENTS_ROOT}/nomad-lab-abc123-7/agent.log"


def test_wait_ready_walks_every_stage_to_healthy(host, fast_waits):
    api = FakeApi(cluster=[
        ApiError("status/leader", "connection refused"),  # HTTP not listening yet
        cluster_state(leader=""),
        cluster_state(node_status=None),
        cluster_state(node_status="initializing"),
        cluster_state(drivers={"docker": {}}),
        unhealthy(),
        cluster_state(drivers=HEALTHY, node_id="node-42"),
    ])
    agent = make_agent(host, api)
    agent.wait_ready()
    assert agent.node_id == "node-42"
    assert api.cluster.calls == 7
    assert api.called("node_by_name") == [("nomad-lab-abc123-1",)] * 5
    assert len(host.ran("systemctl is-active nomad-lab-abc123-1.service")) == 7
    assert sum(fast_waits.sleeps) < 60


def test_wait_ready_first_waits_for_the_http_port_on_the_lab_host(host, fast_waits):
    """Through the tunnel a refused connection hangs: ask the lab host (ss) first, once."""
    api = FakeApi()
    agent = make_agent(host, api)
    host.on("ss -Htln", "", "", f"LISTEN 0 4096 127.0.0.1:{PORTS['http']} 0.0.0.0:*\n")
    agent.wait_ready()
    probes = host.ran("ss -Htln")
    assert len(probes) == 3 and f"sport = :{PORTS['http']}" in probes[0].cmd
    assert api.cluster.calls == 1, "no API call before the port listens"


def test_wait_ready_timeout_while_the_port_is_closed(host, fast_waits):
    agent = make_agent(host, FakeApi(), ready_timeout=10)
    host.on("ss -Htln", "")
    with pytest.raises(LabTimeout, match="HTTP port 24646 not listening yet"):
        agent.wait_ready()


@pytest.mark.parametrize("state, seen", [
    (cluster_state(leader=""), "no leader elected yet"),
    (cluster_state(node_status=None), "client node not registered yet"),
    (cluster_state(node_status="initializing"), "node status=initializing"),
    (cluster_state(drivers={"docker": {}}), "driver java-crun not fingerprinted yet "
                                            "(drivers: ['docker'])"),
    (unhealthy(), "driver java-crun Detected=True Healthy=False: java runtime not usable"),
    (ApiError("status/leader", "No cluster leader"), "No cluster leader"),
])
def test_wait_ready_timeout_names_the_last_state_and_the_log_tail(host, fast_waits, state, seen):
    agent = make_agent(host, FakeApi(cluster=[state]), ready_timeout=20)
    with pytest.raises(LabTimeout) as info:
        agent.wait_ready()
    msg = str(info.value)
    assert "timed out after 20.0s waiting for Nomad agent nomad-lab-abc123-1 ready" in msg
    assert seen in msg
    assert f"agent log tail ({agent.log_path}):" in msg
    assert "[ERROR] plugin: java runtime not usable" in msg
    assert fast_waits.now == pytest.approx(1020.0)


def test_wait_ready_timeout_argument_overrides_the_default(host, fast_waits):
    agent = make_agent(host, FakeApi(cluster=[cluster_state(leader="")]), ready_timeout=60)
    with pytest.raises(LabTimeout, match="after 5.0s"):
        agent.wait_ready(timeout=5)


@pytest.mark.parametrize("state", ["failed", "inactive", "unknown"])
def test_a_dead_unit_fails_at_once_with_the_log_tail(host, fast_waits, state):
    agent = make_agent(host, FakeApi(cluster=[cluster_state(leader="")]))
    unit_active(host, f"{state}\n", rc=3)
    with pytest.raises(LabError) as info:
        agent.wait_ready()
    assert not isinstance(info.value, LabTimeout)
    msg = str(info.value)
    assert f"unit nomad-lab-abc123-1.service: {state}" in msg
    assert "java runtime not usable" in msg
    assert fast_waits.sleeps == [], "must not wait out the deadline for a dead agent"


def test_a_unit_that_dies_while_waiting_stops_the_wait(host, fast_waits):
    agent = make_agent(host, FakeApi(cluster=[cluster_state(leader="")]))
    unit_active(host, "active\n", "activating\n", "failed\n")
    with pytest.raises(LabError, match="is not running"):
        agent.wait_ready()
    assert len(fast_waits.sleeps) == 2


@pytest.mark.parametrize("state", ["active", "activating", "reloading"])
def test_assert_alive_accepts_live_states(host, state):
    agent = make_agent(host)
    unit_active(host, f"{state}\n")
    agent.assert_alive()


def test_wait_ready_with_the_real_api_retries_nomad_http_errors(host, fast_waits):
    """Nomad answers 500 "No cluster leader" before the election: that is not-ready-yet."""
    agent = make_agent(host)
    with FakeNomadServer() as nomad:
        nomad.route("GET", "/v1/status/leader", (500, Text("No cluster leader")),
                    (200, "127.0.0.1:24647"))
        nomad.route("GET", "/v1/nodes", (200, [{"ID": "n1", "Name": agent.id,
                                                "Status": "ready"}]))
        nomad.route("GET", "/v1/node/n1", (200, {"ID": "n1", "Status": "ready",
                                                 "Drivers": HEALTHY}))
        agent.api = LabApi("127.0.0.1", nomad.port, timeout=5)
        agent.wait_ready()
    assert agent.node_id == "n1"
    assert [r.path for r in nomad.requests] == [
        "/v1/status/leader", "/v1/status/leader", "/v1/nodes", "/v1/node/n1"]


def test_wait_ready_with_the_real_api_retries_a_refused_connection(host, fast_waits):
    from lab.host import free_local_port

    agent = make_agent(host, LabApi("127.0.0.1", free_local_port(), timeout=1), ready_timeout=3)
    with pytest.raises(LabTimeout) as info:
        agent.wait_ready()
    assert "ApiError" in str(info.value) and "status/leader" in str(info.value)


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


def test_start_renders_launches_tunnels_and_waits(host, fast_waits, fake_labapi):
    host.on("ss -Htanu", "127.0.0.1:22\n")
    http_listening(host)
    unit_active(host, "active\n")
    agent = NomadAgent(host, "abc123", 1, ready_timeout=60, stop_timeout=30, api_timeout=9)
    assert agent.start() is agent

    assert sorted(agent.ports) == ["http", "rpc", "serf"] and len(set(agent.ports.values())) == 3
    cfg = parse_hcl(host.files[f"{agent.dir}/agent.hcl"])
    assert cfg["ports"] == agent.ports
    assert host.ran(f"mkdir -p {agent.dir}/data")
    (launch,) = host.ran("systemd-run")
    assert launch.sudo
    assert f"--unit={agent.unit}" in launch.cmd
    assert f"StandardOutput=append:{agent.log_path}" in launch.cmd
    assert f"{NOMAD_BIN} agent -config={agent.dir}/agent.hcl" in launch.cmd
    assert host.tunnels == [agent.ports["http"]] and host.open_tunnels == 1
    (api,) = fake_labapi.made
    assert api.address == ("127.0.0.1", 40001, 9) and agent.api is api
    assert agent.node_id == "node-0001" and agent.startup_seconds >= 0

    assert agent.stop() == []
    assert host.open_tunnels == 0
    assert host.ran(f"systemctl stop {agent.unit}")
    assert host.ran(f"rm -rf {agent.dir}")


def test_a_start_that_never_gets_ready_tears_the_agent_down(host, fast_waits, fake_labapi):
    fake_labapi.cluster[0] = [unhealthy()]
    http_listening(host)
    unit_active(host, "active\n")
    agent = NomadAgent(host, "abc123", 1, ready_timeout=10, stop_timeout=30)
    with pytest.raises(LabTimeout, match="Healthy=False"):
        agent.start()
    assert host.open_tunnels == 0
    assert host.ran(f"systemctl stop {agent.unit}") and host.ran(f"rm -rf {agent.dir}")


def test_stop_reports_what_remains(host):
    agent = NomadAgent(host, "abc123", 1, ready_timeout=1, stop_timeout=1)
    left = f"unit:{agent.unit}\ndir:{agent.dir}\n"
    host.on("echo unit:", left)
    assert agent.stop(check=False) == [f"unit:{agent.unit}", f"dir:{agent.dir}"]
    with pytest.raises(LabError) as info:
        agent.stop()
    assert f"dir:{agent.dir}" in str(info.value) and "invoke lab.clean" in str(info.value)


def test_remains_process_probe_does_not_match_its_own_command_line(host):
    """pgrep -f sees the shell running the probe, whose command line holds the pattern."""
    agent = NomadAgent(host, "abc123", 1, ready_timeout=1, stop_timeout=1)
    agent.remains()
    (probe,) = host.ran("pgrep")
    pattern = re.search(r"pgrep -f -- '([^']+)'", probe.cmd)[1]
    assert not re.search(pattern, probe.cmd), f"{pattern!r} matches the probe itself"
    assert re.search(pattern, f"{NOMAD_BIN} agent -config={agent.dir}/agent.hcl")


def test_remains_probe_run_by_a_real_shell_finds_nothing(host):
    """The probe itself, run locally by bash as sshd would: no unit, no dir, no process."""
    agent = NomadAgent(host, "zz-unit-test", 1, ready_timeout=1, stop_timeout=1)
    agent.remains()
    (probe,) = host.ran("pgrep")
    out = subprocess.run(["bash", "-c", probe.cmd], capture_output=True, text=True, timeout=10)
    assert out.stdout.split() == []


def test_restart_restarts_the_unit_and_waits_again(host, fast_waits):
    api = FakeApi()
    agent = make_agent(host, api)
    agent.restart()
    assert host.ran(f"systemctl restart {agent.unit}")[0].sudo
    assert api.cluster.calls == 1 and agent.node_id == "node-0001"


def test_every_command_the_agent_runs_parses_as_bash(host, fast_waits, fake_labapi):
    host.on("ss -Htanu", "")
    http_listening(host)
    unit_active(host, "active\n")
    agent = NomadAgent(host, "abc123", 1, ready_timeout=60, stop_timeout=30).start()
    agent.log_tail()
    agent.restart()
    agent.stop()
    assert len(host.calls) > 8
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
    host.on("list-units", "container 3f2a.app\n", "")
    assert drain_agent(host, api).drain() == []
    assert api.called("deregister") == [("lab-abc123-a", True), ("lab-abc123-b", True)]
    methods = [m for m, _ in api.calls]
    assert methods.index("client_gc") > max(i for i, m in enumerate(methods)
                                            if m == "allocations")
    assert len(host.ran("list-units")) == 2


def test_drain_reports_live_allocations_instead_of_raising(host, fast_waits):
    api = FakeApi(jobs=["j"], alloc_lists=[[alloc("running")]])
    (problem,) = drain_agent(host, api).drain()
    assert problem.startswith("draining agent nomad-lab-abc123-1 failed: timed out after 20.0s")
    assert "allocations still live: ['a1b2c3d4']" in problem
    assert api.called("client_gc") == []


def test_drain_reports_containers_that_survive_client_gc(host, fast_waits):
    host.on("list-units", "container 3f2a.app\n")
    (problem,) = drain_agent(host, FakeApi(alloc_lists=[[]])).drain()
    assert "containers destroyed after client GC" in problem and "['3f2a.app']" in problem
