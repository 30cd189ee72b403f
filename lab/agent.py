"""NomadAgent: one throw-away Nomad server+client on the lab host, per test.

Each agent gets a unique id (tagged with the run id), its own data_dir, ports picked free on
the lab host and bound to 127.0.0.1, and runs as a transient systemd unit so that it survives
SSH hiccups and a crashed run can be swept by name. The HTTP API is reached through an SSH
tunnel. Readiness is one deadline over: unit alive, leader elected, node ready, driver healthy.
"""

from __future__ import annotations

import json
import shlex
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from invoke.exceptions import ThreadException

from lab.api import TRANSIENT, LabApi
from lab.errors import LabError, LabTimeout
from lab.host import LabHost
from lab.wait import Pending, until

DRIVER = "java-crun"
PLUGIN_BINARY = "nomad-driver-java-crun"
REMOTE_ROOT = "/opt/lab"
NOMAD_BIN = f"{REMOTE_ROOT}/bin/nomad"
PLUGIN_DIR = f"{REMOTE_ROOT}/plugins"
AGENTS_ROOT = "/var/lib/nomad-lab"
UNIT_PREFIX = "nomad-lab-"
CRUN_STATE_ROOT = "/run/java-crun"
# Fingerprinters that probe cloud metadata addresses: never in a sealed lab.
DENIED_FINGERPRINTERS = "env_aws,env_gce,env_azure,env_digitalocean,consul,vault"
DENIED_DRIVERS = "docker,podman,qemu,java,exec,raw_exec"


@dataclass
class AgentOptions:
    """Per-test knobs (pytest: @pytest.mark.agent(...))."""

    fingerprint_period: str = "1s"
    artifact: dict[str, str] = field(default_factory=dict)  # client artifact {} block
    plugin_config: dict[str, object] = field(default_factory=dict)
    log_level: str = "DEBUG"


def render_config(agent_id: str, data_dir: str, ports: dict[str, int],
                  options: AgentOptions) -> str:
    """The agent's HCL: server+client on loopback only, our plugin, nothing that phones out."""
    plugin_cfg = {"fingerprint_period": options.fingerprint_period,
                  "state_root": CRUN_STATE_ROOT, **options.plugin_config}
    artifact = "".join(f"\n    {k} = {json.dumps(v)}" for k, v in options.artifact.items())
    return f"""# rendered by lab/agent.py for {agent_id}
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
  network_interface = "lo"
  options = {{
    "fingerprint.denylist" = "{DENIED_FINGERPRINTERS}"
    "driver.denylist"      = "{DENIED_DRIVERS}"
  }}
  artifact {{{artifact}
  }}
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

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> NomadAgent:
        self.started_at = time.monotonic()
        self.ports = dict(zip(("http", "rpc", "serf"), self.host.free_ports(3), strict=True))
        config = render_config(self.id, self.dir, self.ports, self.options)
        self.host.sudo(f"mkdir -p {self.dir}/data && chmod 0711 {self.dir}")
        self.host.write_file(f"{self.dir}/agent.hcl", config)
        self.host.sudo(
            f"systemd-run --unit={self.unit} --collect --quiet "
            f"-p StandardOutput=append:{self.log_path} -p StandardError=append:{self.log_path} "
            # As Nomad's own unit: stopping the agent must not kill the driver's per-container
            # shims, or a restarted agent could not recover its tasks' exit codes.
            f"-p KillMode=process -p TimeoutStopSec=20 "
            f"{NOMAD_BIN} agent -config={self.dir}/agent.hcl",
            hint="is systemd running on the lab host? the lab needs it for transient units")
        local_port = self._tunnel.enter_context(self.host.forward_local(self.ports["http"]))
        self.api = LabApi("127.0.0.1", local_port, timeout=self.api_timeout)
        try:
            self.wait_ready()
        except BaseException:
            self.stop(check=False)
            raise
        self.ready_at = time.monotonic()
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Leader elected, our node ready, driver java-crun detected and healthy."""
        timeout = timeout or self.ready_timeout

        listening = {"http": False}

        def ready():
            self.assert_alive()
            # Through the tunnel a refused connection hangs until the client times out, so
            # first ask the lab host itself whether the HTTP port is listening yet.
            if not listening["http"]:
                port = self.ports["http"]
                res = self.host.run(f"ss -Htln 'sport = :{port}'", check=False)
                if str(port) not in res.stdout:
                    return Pending(f"unit active; HTTP port {port} not listening yet")
                listening["http"] = True
            if not self.api.leader():
                return Pending("no leader elected yet")
            node = self.api.node_by_name(self.id)
            if node is None:
                return Pending("leader elected; client node not registered yet")
            if node["Status"] != "ready":
                return Pending(f"node status={node['Status']}")
            full = self.api.node(node["ID"])
            info = (full.get("Drivers") or {}).get(DRIVER)
            if not info:
                return Pending(f"node ready; driver {DRIVER} not fingerprinted yet "
                               f"(drivers: {sorted(full.get('Drivers') or {})})")
            if not (info.get("Detected") and info.get("Healthy")):
                return Pending(f"driver {DRIVER} Detected={info.get('Detected')} "
                               f"Healthy={info.get('Healthy')}: {info.get('HealthDescription')}")
            self.node_id = node["ID"]
            return True

        try:
            until(ready, timeout, f"Nomad agent {self.id} ready with driver {DRIVER} healthy",
                  # TRANSIENT includes ApiError: python-nomad turns a refused connection and
                  # Nomad's 500 "No cluster leader" into API errors; both mean not ready yet.
                  retry_on=TRANSIENT, interval=0.3)
        except LabTimeout as exc:
            raise LabTimeout(exc.what, exc.timeout, exc.last,
                             f"agent log tail ({self.log_path}):\n{self.log_tail()}") from None

    def assert_alive(self) -> None:
        """Fail fast (with the log tail) when the agent's unit has died."""
        state = self.host.run(f"systemctl is-active {self.unit}", check=False).stdout.strip()
        if state not in ("active", "activating", "reloading"):
            raise LabError(f"Nomad agent {self.id} is not running (unit {self.unit}: {state}).\n"
                           f"agent log tail ({self.log_path}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return self.host.sudo(f"tail -n {lines} {self.log_path}", check=False).stdout

    def restart(self) -> None:
        """Restart the agent process in place (client state is kept in data_dir)."""
        self.host.sudo(f"systemctl restart {self.unit}")
        self.wait_ready()

    def stop(self, check: bool = True) -> list[str]:
        """Stop the unit, close the tunnel, remove the data dir; return what would not go."""
        self.close_tunnel()
        # After drain() nothing of value runs in the unit: KILL what KillMode=process leaves.
        self.host.sudo(f"systemctl stop {self.unit} 2>/dev/null; "
                       f"systemctl kill -s KILL {self.unit} 2>/dev/null; "
                       f"systemctl reset-failed {self.unit} 2>/dev/null; true", check=False,
                       timeout=self.stop_timeout + 30)
        # Nomad mounts secrets/ (tmpfs) and may leave alloc mounts: unmount before rm.
        self.host.sudo(f"if [ -d {self.dir} ]; then "
                       f"grep -o ' {self.dir}/[^ ]*' /proc/self/mountinfo | sort -r | "
                       f"xargs -r -n1 umount -l; rm -rf {shlex.quote(self.dir)}; fi",
                       check=False)
        remains = self.remains()
        if check and remains:
            raise LabError(f"agent {self.id} left things behind after stop: {remains}; "
                           "clean up with `invoke lab.clean`")
        return remains

    def drain(self) -> list[str]:
        """Purge every job, let the client GC its allocations, wait for containers to go.

        Nomad leaves tasks running when the agent stops, so this must come before stop().
        Returns problems (empty when clean) rather than raising: teardown goes on regardless.
        """
        from lab import janitor

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

            def no_containers():
                left = janitor.scan(self.host, include_faults=False).get("container", [])
                return True if not left else Pending(f"containers: {left}")

            until(no_containers, self.stop_timeout,
                  f"{self.id}: containers destroyed after client GC")
        except LabError as exc:
            return [f"draining agent {self.id} failed: {exc}"]
        return []

    def close_tunnel(self) -> None:
        # Fabric re-raises, at close, every connection its tunnel refused while the agent
        # was still starting: expected during readiness polling, so not an error here.
        try:
            self._tunnel.close()
        except ThreadException:
            pass

    def remains(self) -> list[str]:
        out = self.host.sudo(
            f"systemctl is-active {self.unit} >/dev/null 2>&1 && echo unit:{self.unit}; "
            f"test -e {self.dir} && echo dir:{self.dir}; "
            # [g]: the pattern must not match this very command line (our own shell).
            f"pgrep -f -- '-confi[g]={self.dir}/' >/dev/null && echo process:nomad-{self.id}; "
            "true",
            check=False).stdout
        return out.split()

    @property
    def startup_seconds(self) -> float:
        return self.ready_at - self.started_at
