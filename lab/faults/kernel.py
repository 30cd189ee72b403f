"""Faults the guest kernel itself reports: a real hung task, for the kernel-health gate's own
test (lab/checks/kernel_log.py). Shell: scripts/hung-task.sh."""

from __future__ import annotations

import secrets

from lab.faults.framework import FaultError, Host, Plan, call, probe
from lab.faults.registry import Marker, fault

HUNG_TASK = "hung-task.sh"
# A device-mapper device named lab-fault-*, or a hung-task timeout left shorter than 120 s.
HUNG = Marker("hung-task", HUNG_TASK)


@fault(HUNG)
def hung_task(host: Host, timeout_s: int = 5) -> Plan:
    """Block a writer (dd with conv=fsync) on a suspended device-mapper device, with the
    kernel's hung-task timeout set to `timeout_s`: its fsync waits for writeback in plain
    TASK_UNINTERRUPTIBLE, which the detector reports. The heal resumes and removes the device
    (the write completes) and restores the timeout. details: device, timeout_s,
    previous_timeout_s.

    Not a reader: an O_DIRECT read waits in submit_bio_wait(), which wakes every timeout/2 to
    stay unreported (measured: 215 s in D state at a 5 s timeout, no line)."""
    if not 1 <= timeout_s <= 60:
        raise FaultError(f"hung_task: timeout_s={timeout_s} must be within 1..60")
    previous = int(probe(host, "a hung task", call(HUNG_TASK, "fit"),
                         call(HUNG_TASK, "timeout")).split()[-1])
    name = f"lab-fault-hung-{secrets.token_hex(3)}"
    return Plan({"device": f"/dev/mapper/{name}", "timeout_s": timeout_s,
                 "previous_timeout_s": previous},
                inject=[call(HUNG_TASK, "add", name, timeout_s)],
                heal=[call(HUNG_TASK, "del", name, previous)],
                check=[call(HUNG_TASK, "present", name)],
                healed=[call(HUNG_TASK, "gone", name)])
