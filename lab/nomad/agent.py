"""NomadAgent: one throw-away Nomad server+client on the lab host, per test.

Each agent gets a unique id (tagged with the run id), its own data_dir, ports picked free on
the lab host and bound to 127.0.0.1, and runs as a transient systemd unit so that it survives
SSH hiccups and a crashed run can be swept by name. The HTTP API is reached through an SSH
tunnel. Readiness is one deadline over: unit alive, leader elected, node ready, driver healthy.
"""

from __future__ import annotations

import base64
import json
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from invoke.exceptions import ThreadException

from lab.core.errors import CommandFailed, LabError, LabTimeout
from lab.core.wait import Pending, until
from lab.nomad.api import TRANSIENT, LabApi
from lab.remote.host import LabHost
from lab.remote.layout import (
    AGENTS_ROOT,
    DRIVER,
    NOMAD_BIN,
    NOMAD_SLICE,
    PLUGIN_BINARY,
    PLUGIN_DIR,
    UNIT_PREFIX,
    state_root,
)

# Fingerprinters that probe cloud metadata addresses: never in a sealed lab.
DENIED_FINGERPRINTERS = "env_aws,env_gce,env_azure,env_digitalocean,consul,vault"
# Debian's containernetworking-plugins, the five Nomad's bridge calls (guest-setup.sh).
CNI_PATH = "/opt/lab/cni"
CNI_FINGERPRINTERS = "cni,plugins_cni"  # denied unless the test asks for group networks
BRIDGE_SUBNET = "172.26.64.0/20"  # Nomad's own default, written down; never routed outside
DENIED_DRIVERS = "docker,podman,qemu,java,exec,raw_exec,mock_driver"  # -dev adds mock_driver
STEPS = ("unit_started", "http_listening", "leader", "node_registered", "node_ready",
         "driver_healthy")


def parse_start_output(text: str) -> tuple[dict[str, float], str | None, str]:
    """agent-start.sh's output: ({step: seconds since launch}, node id or None, last seen)."""
    steps: dict[str, float] = {}
    node_id, last = None, ""
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "step":
            ms, _, name = rest.partition(" ")
            steps[name] = int(ms) / 1000
        elif kind == "node":
            node_id = rest.strip()
        elif kind == "last":
            last = rest.strip()
    return steps, node_id, last


@dataclass
class AgentOptions:
    """Per-test knobs (pytest: @pytest.mark.agent(...))."""

    fingerprint_period: str = "1s"
    artifact: dict[str, str] = field(default_factory=dict)  # client artifact {} block
    plugin_config: dict[str, object] = field(default_factory=dict)
    log_level: str = "DEBUG"
    # A persisting (non -dev) agent keeps client state across restarts: the recovery tests
    # need it; every other test gets a -dev agent, ready seconds sooner.
    persist: bool = False
    # Client host volumes by name -> read_only; each is a scratch dir in the agent's own dir.
    host_volumes: dict[str, bool] = field(default_factory=dict)
    # The client's total CPU compute in MHz instead of the fingerprinted one (client
    # cpu_total_compute): lets a task ask for more cpu than the lab host has.
    cpu_total_compute: int | None = None
    # Group networks (`network { mode = "bridge" }`, "none"): the client gets the CNI plugins.
    # Off by default: Nomad's plugins_cni fingerprinter then runs every plugin at each agent
    # start, seconds under TCG that no host-network test needs.
    group_networks: bool = False



def render_config(agent_id: str, data_dir: str, ports: dict[str, int],
                  options: AgentOptions) -> str:
    """The agent's HCL: server+client on loopback only, our plugin, nothing that phones out."""
    plugin_cfg = {"fingerprint_period": options.fingerprint_period,
                  "state_root": state_root(agent_id), **options.plugin_config}
    artifact = "".join(f"\n    {k} = {json.dumps(v)}" for k, v in options.artifact.items())
    volumes = "".join(
        f'\n  host_volume "{name}" {{\n    path      = "{data_dir}/volumes/{name}"\n'
        f'    read_only = {json.dumps(read_only)}\n  }}\n'
        for name, read_only in options.host_volumes.items())
    compute = (f"\n  cpu_total_compute     = {int(options.cpu_total_compute)}"
               if options.cpu_total_compute else "")
    if options.group_networks:
        # The bridge's subnet is set here rather than left to Nomad's default. It exists only
        # inside the lab host.
        network = (f'\n  cni_path              = "{CNI_PATH}"'
                   f'\n  bridge_network_subnet = "{BRIDGE_SUBNET}"')
        denied = DENIED_FINGERPRINTERS
    else:
        network, denied = "", f"{DENIED_FINGERPRINTERS},{CNI_FINGERPRINTERS}"
    return f"""# rendered by lab/nomad/agent.py for {agent_id}
name                 = "{agent_id}"
datacenter           = "dc1"
data_dir             = "{data_dir}/data"
plugin_dir           = "{PLUGIN_DIR}"
bind_addr            = "127.0.0.1"
log_level            = "{options.log_level}"
disable_update_check = true
leave_on_terminate   = false

ports {{
  http = {ports["http"]}
  rpc  = {ports["rpc"]}
  serf = {ports["serf"]}
}}

advertise {{
  http = "127.0.0.1"
  rpc  = "127.0.0.1"
  serf = "127.0.0.1"
}}

# Without it a client never asks the driver for TaskStats (Nomad 1.11 stats_hook: only
# published allocation metrics are collected): the stats API would show zeros. -dev sets it;
# a persisting agent would not.
telemetry {{
  publish_allocation_metrics = true
  collection_interval        = "1s"
}}

server {{
  enabled          = true
  bootstrap_expect = 1
  # Without it Nomad silently ignores a task's memory_max.
  default_scheduler_config {{
    memory_oversubscription_enabled = true
  }}
}}

client {{
  enabled           = true
  servers           = ["127.0.0.1:{ports["rpc"]}"]
  network_interface = "lo"{network}{compute}
  options = {{
    "fingerprint.denylist" = "{denied}"
    "driver.denylist"      = "{DENIED_DRIVERS}"
  }}
  artifact {{{artifact}
  }}{volumes}
}}

plugin "{PLUGIN_BINARY}" {{
  config {{
{_hcl_body(plugin_cfg, indent=4)}
  }}
}}
"""


def _hcl_body(values: dict[str, object], indent: int) -> str:
    pad = " " * indent
    return "\n".join(f"{pad}{k} = {json.dumps(v)}" for k, v in values.items())


class NomadAgent:
    """Start, wait ready, tunnel, stop and reap one Nomad agent on the lab host."""

    def __init__(self, host: LabHost, run_id: str, seq: int, *, ready_timeout: float,
                 stop_timeout: float, api_timeout: float = 15,
                 options: AgentOptions | None = None, log=print):
        self.host, self.options, self.log = host, options or AgentOptions(), log
        self.id = f"{UNIT_PREFIX}{run_id}-{seq}"
        self.unit = f"{self.id}.service"
        self.dir = f"{AGENTS_ROOT}/{self.id}"
        self.log_path = f"{self.dir}/agent.log"
        self.ready_timeout, self.stop_timeout, self.api_timeout = (
            ready_timeout, stop_timeout, api_timeout)
        self.ports: dict[str, int] = {}
        self.api: LabApi | None = None
        self.node_id: str | None = None
        self._tunnel = ExitStack()
        self.started_at = self.ready_at = 0.0
        self.timeline: dict[str, float] = {}  # step -> seconds after launch (agent-start.sh)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> NomadAgent:
        """Launch the unit and wait until ready, in one SSH round trip (agent-start.sh)."""
        self.started_at = time.monotonic()
        self.ports = dict(zip(("http", "rpc", "serf"), self.host.free_ports(3), strict=True))
        config = render_config(self.id, self.dir, self.ports, self.options)
        mode = "persist" if self.options.persist else "dev"
        try:
            self._run_start_script(mode, config)
            local_port = self._tunnel.enter_context(self.host.forward_local(self.ports["http"]))
            self.api = LabApi("127.0.0.1", local_port, timeout=self.api_timeout)
        except BaseException:
            self.stop(check=False)
            raise
        self.ready_at = time.monotonic()
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Leader elected, our node ready, driver java-crun detected and healthy."""
        self._run_start_script("wait", "", timeout)

    def _run_start_script(self, mode: str, config: str, timeout: float | None = None) -> None:
        timeout = timeout or self.ready_timeout
        args = [self.unit, self.dir, str(self.ports["http"]), self.id, DRIVER,
                str(max(1, round(timeout))), mode,
                base64.b64encode(config.encode()).decode() or "-", NOMAD_BIN]
        what = f"Nomad agent {self.id} ready with driver {DRIVER} healthy"
        res = self.host.run_script("agent-start.sh", args, check=False, timeout=timeout + 30)
        steps, node_id, last = parse_start_output(res.stdout)
        self.timeline.update(steps)
        if res.rc == 0 and node_id:
            self.node_id = node_id
            return
        tail = f"agent log tail ({self.log_path}):\n{self.log_tail()}"
        if res.rc == 4:
            raise LabTimeout(what, timeout, last, tail)
        if res.rc == 3:
            raise LabError(f"Nomad agent {self.id} is not running (unit {self.unit} died; "
                           f"last seen: {last}).\n{tail}")
        raise CommandFailed(self.host.name, f"agent-start.sh {self.unit}", res.rc,
                            res.stderr, res.stdout,
                            hint="is systemd running on the lab host? the lab needs it for "
                            "transient units")

    def log_tail(self, lines: int = 40) -> str:
        return self.host.sudo(f"tail -n {lines} {self.log_path}", check=False).stdout

    def restart(self) -> None:
        """Restart the agent process in place (client state is kept in data_dir)."""
        self.host.sudo(f"systemctl restart {self.unit}")
        self.wait_ready()

    def stop(self, check: bool = True, graceful: bool = False) -> list[str]:
        """Stop the unit, close the tunnel, remove the data dir and the driver's state root;
        return what would not go. After a clean drain() the agent is KILLed at once (nothing of
        value runs in it); `graceful` lets Nomad shut down first (agent-stop.sh)."""
        self.close_tunnel()
        res = self.host.run_script(
            "agent-stop.sh", [self.unit, self.dir, state_root(self.id),
                              "graceful" if graceful else "kill"],
            check=False, timeout=self.stop_timeout + 30)
        remains = res.stdout.split()
        if check and remains:
            raise LabError(f"agent {self.id} left things behind after stop: {remains}; "
                           "clean up with `invoke lab.clean`")
        return remains

    def drain(self) -> list[str]:
        """Purge every job, let the client GC its allocations, wait for containers to go.

        Nomad leaves tasks running when the agent stops, so this must come before stop().
        Returns problems (empty when clean) rather than raising: teardown goes on regardless.
        """
        api = self.api
        try:
            for job in api.jobs():
                api.deregister(job["ID"], purge=True)

            def all_terminal():
                live = [a["ID"][:8] for a in api.allocations()
                        if a["ClientStatus"] in ("pending", "running")]
                return True if not live else Pending(f"allocations still live: {live}")

            until(all_terminal, self.stop_timeout, f"{self.id}: allocations stopped",
                  retry_on=TRANSIENT)
            api.client_gc()

            until(lambda: self._torn_down(api.seen_alloc_ids), self.stop_timeout,
                  f"{self.id}: containers, network namespaces and cgroups of its allocations "
                  "destroyed after client GC")
        except LabError as exc:
            return [f"draining agent {self.id} failed: {exc}"]
        return []

    def _torn_down(self, alloc_ids) -> bool | Pending:
        """Nomad's GC has destroyed what the allocations had on the host: their containers,
        and (its postrun hooks, which run after the task is gone) a group network's namespace
        and the task cgroups. An agent stopped before those hooks ran would leave them."""
        allocs = " ".join(sorted(alloc_ids))
        # One sudo; crun (a second under TCG) only while its root holds a container dir.
        left = self.host.sudo(
            f"ls -A {self.crun_root} 2>/dev/null | grep -q . && "
            f"crun --root {self.crun_root} list -q 2>/dev/null | sed 's/^/container /'; "
            f"for a in {allocs}; do [ -e /var/run/netns/$a ] && echo netns $a; "
            f"for c in {NOMAD_SLICE}/*/$a.*.scope; do [ -e $c ] && echo cgroup $c; done; "
            "done; true", check=False).stdout.splitlines()
        return True if not left else Pending(f"still there: {left}")

    def close_tunnel(self) -> None:
        # Fabric re-raises, at close, every connection its tunnel refused while the agent
        # was still starting: expected during readiness polling, so not an error here.
        try:
            self._tunnel.close()
        except ThreadException:
            pass

    @property
    def crun_root(self) -> str:
        """crun's --root for this agent's containers on the lab host."""
        return f"{state_root(self.id)}/crun"

    @property
    def startup_seconds(self) -> float:
        return self.ready_at - self.started_at
