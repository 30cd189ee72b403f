"""Network faults inside the lab host: delay or loss with tc netem, and TCP resets with
iptables. Shell: scripts/netem.sh and scripts/reset-rule.sh."""

from __future__ import annotations

import secrets

from lab.faults.framework import FaultError, Host, Plan, call, probe
from lab.faults.registry import Marker, fault

NETEM = "netem.sh"
RESET_RULE = "reset-rule.sh"
QDISC_HANDLE = "1ab:"  # root qdisc of network faults ("lab"; netem.sh: handle=)
NETEM_HANDLE = "1ac:"  # netem under the prio qdisc of a port-only delay (netem_handle=)
RULE_TAG = "lab-fault"  # iptables comment prefix (reset-rule.sh: tag=)

QDISC = Marker("qdisc", NETEM)  # a root qdisc with handle 1ab: on any device
RULE = Marker("iptables", RESET_RULE)  # an iptables rule whose comment starts lab-fault


@fault(QDISC)
def network_delay(host: Host, delay_ms: float = 100, jitter_ms: float = 0,
                  loss_pct: float = 0, port: int | None = None, dev: str = "lo") -> Plan:
    """Delay (and optionally drop) packets with tc netem on `dev` inside the lab host.

    With `port`, only TCP traffic from or to that port is shaped (a prio qdisc whose third
    band holds netem, u32 filters on sport/dport): the SSH session and the agent's API tunnel
    are left alone. Both directions pass lo's egress, so the round trip grows by 2*delay.
    details: dev, netem (the arguments), port, observed (`tc qdisc show` of the fault).
    """
    if delay_ms < 0 or jitter_ms < 0 or not 0 <= loss_pct <= 100:
        raise FaultError(f"network_delay: delay_ms={delay_ms}, jitter_ms={jitter_ms} must be "
                         f">= 0 and loss_pct={loss_pct} within 0..100")
    if not delay_ms and not loss_pct:
        raise FaultError("network_delay: give delay_ms > 0 or loss_pct > 0")
    netem = []
    if delay_ms:
        netem += ["delay", f"{delay_ms:g}ms"] + ([f"{jitter_ms:g}ms"] if jitter_ms else [])
    if loss_pct:
        netem += ["loss", f"{loss_pct:g}%"]
    modules = ["sch_netem"] + (["sch_prio", "cls_u32"] if port else [])
    probe(host, "shaping traffic", call(NETEM, "modules", *modules), call(NETEM, "free", dev))
    if port is not None:
        port = int(port)
    inject = (call(NETEM, "add", dev, *netem) if port is None
              else call(NETEM, "add-port", dev, port, *netem))
    return Plan({"dev": dev, "netem": " ".join(netem), "port": port}, inject=[inject],
                heal=[call(NETEM, "del", dev)], check=[call(NETEM, "check", dev)],
                healed=[call(NETEM, "gone", dev)])


@fault(RULE)
def connection_resets(host: Host, port: int, every: int = 1, new_only: bool = False) -> Plan:
    """Answer TCP packets to `port` inside the lab host with a RST (iptables REJECT
    --reject-with tcp-reset in INPUT, which loopback traffic crosses).

    every=N resets one packet in N (statistic nth), so connections die part-way; new_only
    resets only connection attempts (SYN): the client sees "connection refused".
    details: port, rule (the iptables rule spec), observed.
    """
    if every < 1:
        raise FaultError(f"connection_resets: every={every} must be >= 1")
    probe(host, "resetting connections", call(RESET_RULE, "present"))
    tag = f"{RULE_TAG}:{secrets.token_hex(4)}"
    spec = ["-p", "tcp", "--dport", str(int(port))] + (["--syn"] if new_only else [])
    if every > 1:
        # --packet every-1: the first packets (the SYN) pass, so connections die part-way
        spec += ["-m", "statistic", "--mode", "nth", "--every", str(every), "--packet",
                 str(every - 1)]
    spec += ["-m", "comment", "--comment", tag, "-j", "REJECT", "--reject-with", "tcp-reset"]
    return Plan({"port": int(port), "every": every, "new_only": new_only, "rule": " ".join(spec)},
                inject=[call(RESET_RULE, "add", *spec)], heal=[call(RESET_RULE, "del", *spec)],
                check=[call(RESET_RULE, "check", tag, *spec)],
                healed=[call(RESET_RULE, "gone", tag)])
