"""Killing the java-crun plugin process. Not a context manager: Nomad heals this fault itself
by relaunching the plugin, so it leaves no marker; the journal record is marked healed by
wait_plugin_restarted(). Shell: scripts/plugin.sh."""

from __future__ import annotations

import time

from lab.core.errors import CommandFailed
from lab.core.wait import Pending, until
from lab.faults.framework import JOURNAL, FaultError, Host, Journal, call, host_name
from lab.faults.registry import REGISTRY, Fault
from lab.remote.layout import PLUGIN_BINARY

SCRIPT = "plugin.sh"
PLUGIN_KILLED = REGISTRY.add(Fault("plugin_killed", markers=()))


def plugin_pids(host: Host) -> list[int]:
    """Pids of running plugin processes (not their shims)."""
    return sorted(int(p) for p in
                  host.sudo(call(SCRIPT, "pids", PLUGIN_BINARY).command()).stdout.split())


def kill_plugin(host: Host, *, journal: Journal | None = None) -> int:
    """SIGKILL the running java-crun plugin process(es); returns the (first) killed pid."""
    pids = plugin_pids(host)
    if not pids:
        raise FaultError(f"no {PLUGIN_BINARY} process is running on {host_name(host)}: start "
                         "an agent with the plugin loaded first (the `agent` fixture)")
    host.sudo(call(SCRIPT, "kill", *pids).command())
    record = (journal or JOURNAL).open(host, PLUGIN_KILLED.name, {"pids": pids})
    record.injected_at = time.time()
    return pids[0]


def wait_plugin_restarted(host: Host, old_pid: int, timeout: float, *,
                          journal: Journal | None = None) -> int:
    """Wait until a new plugin process runs (old_pid gone); returns its pid."""
    def check():
        pids = plugin_pids(host)
        fresh = [p for p in pids if p != old_pid]
        return fresh[0] if fresh and old_pid not in pids else Pending(f"plugin pids {pids}")
    new_pid = until(check, timeout, f"{PLUGIN_BINARY} restarted by Nomad (killed pid {old_pid})",
                    retry_on=(CommandFailed,))
    for record in (journal or JOURNAL).records(getattr(host, "name", None)):
        if (record.name == PLUGIN_KILLED.name and old_pid in record.details["pids"]
                and record.active):
            record.healed_at = time.time()
            record.details["new_pid"] = new_pid
    return new_pid
