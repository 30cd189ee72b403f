"""Where the lab puts things on the lab host, and the names it gives them: defined once here.

Deploy code (push), the agent, the janitor and the faults all read these; none of them owns
them. The plugin's own defaults (plugin/driver/config.go) must agree with DRIVER and
PLUGIN_BINARY.
"""

from __future__ import annotations

DRIVER = "java-crun"  # the task driver's name in a job's `driver = ...`
PLUGIN_BINARY = "nomad-driver-java-crun"  # the plugin's file name, in build/ and on the host
# Each task's shim and init (plugin/cmd/java-crun-shim), in a directory beside the plugin:
# Nomad tries every executable file in plugin_dir as a plugin. Must agree with
# plugin/shim/binary.go.
SHIM_BINARY = "java-crun-shim"
SHIM_RELPATH = f"java-crun.d/{SHIM_BINARY}"  # under build/, PLUGIN_DIR and the harness dir

REMOTE_ROOT = "/opt/lab"
NOMAD_BIN = f"{REMOTE_ROOT}/bin/nomad"
PLUGIN_DIR = f"{REMOTE_ROOT}/plugins"
SHIM_PATH = f"{PLUGIN_DIR}/{SHIM_RELPATH}"
JAR_DIR = f"{REMOTE_ROOT}/jars"
MANIFEST = f"{REMOTE_ROOT}/manifest.json"  # what push installed: sha256, size, mtime per file

AGENTS_ROOT = "/var/lib/nomad-lab"  # one data dir per agent
UNIT_PREFIX = "nomad-lab-"  # every agent's transient systemd unit starts with it
CRUN_STATE_ROOT = "/run/java-crun"  # parent of every agent's driver state root
# Nomad's cgroup (v2) of every agent's tasks: <slice>/<share|reserve>.slice/<alloc>.<task>.scope.
# Shared by all agents: Nomad 1.11.3 has no per-agent cgroup parent for the driver's tasks.
NOMAD_SLICE = "/sys/fs/cgroup/nomad.slice"


def state_root(agent_id: str) -> str:
    """The driver's state root for one agent: its containers are its own, even when another
    agent runs on the same host (a prefetched one, or a parallel test's)."""
    return f"{CRUN_STATE_ROOT}/{agent_id}"
