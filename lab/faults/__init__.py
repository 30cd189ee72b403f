"""Fault injection inside the lab host: each fault is a context manager that always heals.

    with faults.java_library_missing(host) as fault:
        ...  # fault.details["path"] is the hidden libjli.so

The package, one small unit each (docs/faults.md says how to add one):
    framework   FaultRecord, Journal, Plan and Step, and apply: save the heal on the host,
                inject, check; always heal and check the heal
    registry    every fault and the markers it leaves; sweep() and scan() derived from it
    files       files moved aside (*.lab-hidden): steps and marker shared by java and crun
    java, crun, network, plugin    the faults, one family a module
    artifacts   the HTTP artifact server and its failure modes
    scripts/    the shell, run on the lab host inline (lab.remote.host.script_command)
"""

from __future__ import annotations

from collections.abc import Sequence

from lab.faults import crun, java, kernel, network, plugin  # noqa: F401 - each registers its faults
from lab.faults.crun import STAGED_WRAPPER, crun_failing, crun_missing, crun_wrapper
from lab.faults.files import HIDDEN, MOVED_ASIDE, WRAPPER_MARK
from lab.faults.framework import (
    HEAL_TIMEOUT,
    JOURNAL,
    STATE_DIR,
    FaultError,
    FaultNotInjected,
    FaultRecord,
    HealFailed,
    Host,
    Journal,
    Plan,
    Step,
    heal_path,
)
from lab.faults.java import NOT_EXECUTABLE, java_library_missing, java_missing, java_not_executable
from lab.faults.kernel import HUNG, hung_task
from lab.faults.network import (
    NETEM_HANDLE,
    QDISC,
    QDISC_HANDLE,
    RULE,
    RULE_TAG,
    connection_resets,
    network_delay,
)
from lab.faults.plugin import kill_plugin, plugin_pids, wait_plugin_restarted
from lab.faults.registry import PENDING, REGISTRY, SWEEP_ROOTS, Fault, Marker, Registry, fault
from lab.remote.layout import PLUGIN_BINARY

__all__ = [
    "HEAL_TIMEOUT", "HIDDEN", "JOURNAL", "MOVED_ASIDE", "NETEM_HANDLE", "NOT_EXECUTABLE",
    "PENDING", "PLUGIN_BINARY", "QDISC", "QDISC_HANDLE", "REGISTRY", "RULE", "RULE_TAG",
    "STAGED_WRAPPER", "STATE_DIR", "SWEEP_ROOTS", "WRAPPER_MARK", "Fault", "FaultError",
    "FaultNotInjected", "FaultRecord", "HealFailed", "Host", "Journal", "Marker", "Plan",
    "Registry", "Step", "connection_resets", "crun_failing", "crun_missing", "crun_wrapper",
    "fault", "heal_path", "java_library_missing", "java_missing", "java_not_executable",
    "HUNG", "hung_task", "kill_plugin", "network_delay", "plugin_pids", "scan", "scan_script",
    "sweep", "wait_plugin_restarted",
]


def sweep(host: Host, roots: Sequence[str] = SWEEP_ROOTS) -> list[str]:
    """Heal every fault lab.faults can inject, from the host's own markers (pending heal
    scripts, then each registered fault's markers), whatever the journal says. Idempotent;
    returns what it healed. Raises HealFailed if something could not be healed."""
    return REGISTRY.sweep(host, roots)


def scan(host: Host, roots: Sequence[str] = SWEEP_ROOTS) -> list[str]:
    """Fault traces still on the host, "<marker> <trace>" a line (empty when all healed)."""
    return REGISTRY.scan(host, roots)


def scan_script(roots: Sequence[str] = SWEEP_ROOTS) -> str:
    """The shell of scan(): one line per fault trace."""
    return REGISTRY.scan_script(roots)
