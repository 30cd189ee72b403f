"""Fault injection inside the lab host: each fault is a context manager that always heals.

Modelled on Jepsen's nemesis: a fault is a start/stop pair that records what it did. Every fault
    1. resolves its target (read-only) and refuses if a previous fault was left unhealed;
    2. writes its heal script to STATE_DIR on the lab host, *then* injects, in one round trip,
       so a crashed pytest leaves a recipe behind that `sweep()` runs;
    3. checks the fault is really in effect (FaultNotInjected otherwise) and yields its
       FaultRecord (`record.details` names paths, pids, the error observed...);
    4. in `finally`, runs the idempotent heal and checks the original state is back
       (HealFailed otherwise), retrying while SSH itself is unavailable.
Everything a fault changes is marked so `sweep()` can heal it without the journal: files moved
aside end in `.lab-hidden`, wrappers contain LAB_FAULT_WRAPPER, iptables rules carry a comment
starting with `lab-fault`, qdiscs use handle 1ab:.

    with faults.java_library_missing(host) as fault:
        ...  # fault.details["path"] is the hidden libjli.so
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from lab.core.errors import CommandFailed, LabError, LabTimeout
from lab.core.wait import Pending, until
from lab.remote.layout import PLUGIN_BINARY

STATE_DIR = "/var/lib/lab-faults"  # heal scripts of faults in effect (survives a reboot)
HIDDEN = ".lab-hidden"  # suffix of files moved aside
WRAPPER_MARK = "LAB_FAULT_WRAPPER"  # inside every wrapper script a fault installs
RULE_TAG = "lab-fault"  # iptables comment prefix
QDISC_HANDLE = "1ab:"  # root qdisc of network faults ("lab")
NETEM_HANDLE = "1ac:"
# Where faults move files aside or put wrappers (the JREs, crun, a java_home under /opt):
# walking all of /usr takes seconds under TCG, and scan() runs after every test. A fault
# elsewhere is still healed from its heal script in STATE_DIR.
SWEEP_ROOTS = ("/usr/lib/jvm", "/usr/bin", "/usr/sbin", "/usr/local", "/opt")
HEAL_TIMEOUT = 60.0  # how long a heal keeps retrying while SSH is down


class Host(Protocol):  # what faults need from lab.remote.host.LabHost
    name: str

    def sudo(self, cmd: str, **kwargs) -> Any: ...


class FaultError(LabError):
    """A fault could not be injected (its precondition failed); nothing was changed."""


class FaultNotInjected(FaultError):
    """The injection ran but the fault is not in effect (the fault was healed again)."""


class HealFailed(LabError):
    """The heal did not bring the original state back: the lab host needs attention."""


# -- journal ---------------------------------------------------------------------------------
@dataclass
class FaultRecord:
    """What one fault did. Times are wall-clock (time.time()), comparable with Nomad's events."""

    name: str
    host: str
    token: str
    details: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    injected_at: float | None = None
    # The heal runs between these two: the fault may already be gone at heal_started_at.
    heal_started_at: float | None = None
    healed_at: float | None = None
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.healed_at is None

    def __str__(self) -> str:
        def at(t):
            return time.strftime("%H:%M:%S", time.localtime(t)) if t else "-"
        state = "healed" if self.healed_at else "ACTIVE"
        error = f" error={self.error}" if self.error else ""
        return (f"{self.name}@{self.host} injected={at(self.injected_at)} "
                f"healed={at(self.healed_at)} {state}{error} {json.dumps(self.details)}")


class Journal:
    """Every fault injected in this process, in order (the nemesis history)."""

    def __init__(self):
        self._records: list[FaultRecord] = []
        self._lock = threading.Lock()

    def open(self, host: Host, name: str, details: dict[str, Any]) -> FaultRecord:
        record = FaultRecord(name, getattr(host, "name", str(host)), secrets.token_hex(4),
                             dict(details))
        with self._lock:
            self._records.append(record)
        return record

    def records(self, host: str | None = None) -> list[FaultRecord]:
        with self._lock:
            return [r for r in self._records if host is None or r.host == host]

    def active(self) -> list[FaultRecord]:
        return [r for r in self.records() if r.active]

    def summary(self) -> str:
        return "\n".join(str(r) for r in self.records()) or "(no faults injected)"

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


JOURNAL = Journal()


# -- the common machinery --------------------------------------------------------------------
@dataclass
class _Plan:
    name: str
    details: dict[str, Any]
    inject: str  # shell, runs under `set -e` after the heal script is saved
    heal: str  # shell, idempotent; also saved on the host for sweep()
    in_effect: str  # shell: exit 0 iff the fault is in effect; stdout -> details["observed"]
    healed: str  # shell: exit 0 iff the original state is back; stderr says what is wrong


_CHECK_MARK = "__lab_fault_check__"
_NOT_IN_EFFECT = 86


def _heal_path(record: FaultRecord) -> str:
    return f"{STATE_DIR}/{record.name}-{record.token}.sh"


@contextmanager
def _apply(host: Host, plan: _Plan, journal: Journal | None) -> Iterator[FaultRecord]:
    record = (journal or JOURNAL).open(host, plan.name, plan.details)
    heal_path = _heal_path(record)
    try:
        # One round trip (each costs ~1 s under TCG): save the heal, inject, then check the
        # effect; the check's output follows a marker line so the two are told apart.
        res = host.sudo(
            f"set -e\nmkdir -p {STATE_DIR}\n"
            f"cat > {heal_path} <<'LAB_HEAL_EOF'\n"
            f"# lab.faults heal for {plan.name} ({record.token}); run by sweep() if the test "
            f"died\n{plan.heal}\nLAB_HEAL_EOF\n"
            f"{plan.inject}\n"
            f"set +e\necho {_CHECK_MARK}\n( {plan.in_effect}\n )\n"
            f"[ $? -eq 0 ] || exit {_NOT_IN_EFFECT}", check=False)
        if _CHECK_MARK not in res.stdout:
            raise CommandFailed(record.host, f"inject {plan.name}: {plan.inject}", res.rc,
                                res.stderr, res.stdout,
                                hint=f"injecting {plan.name} failed; it was healed again")
        observed = res.stdout.split(_CHECK_MARK, 1)[1].strip()
        if not res.ok:
            raise FaultNotInjected(
                f"{plan.name} on {record.host}: injected but not in effect: "
                f"{res.stderr.strip() or observed or 'check exited ' + str(res.rc)}")
        record.details["observed"] = observed
        record.injected_at = time.time()
    except BaseException as exc:
        record.error = f"not injected: {exc}"
        _heal(host, plan, record, heal_path)
        raise
    try:
        yield record
    finally:
        _heal(host, plan, record, heal_path)


def _heal(host: Host, plan: _Plan, record: FaultRecord, heal_path: str) -> None:
    script = f"set -e\n{plan.heal}\nrm -f {heal_path}\n{plan.healed}"
    record.heal_started_at = time.time()

    def attempt():
        try:
            return host.sudo(script, check=False)
        except CommandFailed as exc:
            if exc.rc is None:  # SSH down or timed out: the heal must still happen
                return Pending(str(exc).splitlines()[0])
            raise

    try:
        res = until(attempt, HEAL_TIMEOUT, f"the heal of {plan.name} on {record.host}",
                    interval=0.5)
    except LabTimeout as exc:
        record.error = f"heal not run: {exc}"
        raise HealFailed(f"{plan.name} on {record.host} could not be healed: {exc}\nfix: when "
                         f"the host is reachable run `./invoke lab.clean` (it runs "
                         f"{heal_path})") from exc
    if not res.ok:
        record.error = (res.stderr or res.stdout).strip()
        raise HealFailed(f"{plan.name} on {record.host}: after healing the original state is "
                         f"not back: {record.error}\nfix: inspect with `./invoke lab.ssh`; "
                         f"`./invoke lab.clean` retries every pending heal")
    record.healed_at = time.time()


def _run(host: Host, script: str, what: str) -> str:
    """A read-only probe; exit 3 means a precondition failed and stderr says which."""
    res = host.sudo(script, check=False)
    if res.rc == 3:
        raise FaultError(f"{what} on {getattr(host, 'name', host)}: {res.stderr.strip()}")
    if not res.ok:
        raise CommandFailed(getattr(host, "name", str(host)), script, res.rc, res.stderr,
                            res.stdout, hint=what)
    return res.stdout


def _q(value: str) -> str:
    return shlex.quote(value)


def _restore(path: str) -> str:
    """Idempotent shell: put `path`+HIDDEN back; a lab wrapper in its place is replaced, a
    real file there (reinstalled meanwhile) wins and the hidden copy is dropped."""
    p, h = _q(path), _q(path + HIDDEN)
    return (f"if [ -e {h} ] || [ -L {h} ]; then\n"
            f"  if {{ [ -e {p} ] || [ -L {p} ]; }} && ! grep -qs {WRAPPER_MARK} {p}; then "
            f"rm -f {h}; else mv -fT {h} {p}; fi\n"
            f"fi")


def _restored(path: str) -> str:
    p, h = _q(path), _q(path + HIDDEN)
    return (f"[ -e {p} ] || {{ echo '{path} is missing' >&2; exit 1; }}\n"
            f"[ ! -e {h} ] || {{ echo '{path}{HIDDEN} is still there' >&2; exit 1; }}\n"
            f"! grep -qs {WRAPPER_MARK} {p} || {{ echo '{path} is still a lab wrapper' >&2; "
            f"exit 1; }}")


def _refuse_if_unhealed(path: str) -> str:
    p, h = _q(path), _q(path + HIDDEN)
    return (f"if [ -e {h} ] || grep -qs {WRAPPER_MARK} {p}; then echo '{path}: a previous "
            f"fault was not healed ({path}{HIDDEN} or a wrapper is there): run "
            f"`./invoke lab.clean` (lab.faults.sweep)' >&2; exit 3; fi")


# -- Java ------------------------------------------------------------------------------------
def _java_home(host: Host, java: str, java_home: str | None) -> tuple[str, str]:
    """(java_home, real java binary) as the driver finds them: java_home if configured, else
    `java` on PATH with its symlinks resolved."""
    if java_home:
        home = java_home.rstrip("/")
        return home, f"{home}/bin/java"
    out = _run(host, f"""
j=$(command -v {_q(java)}) || {{ echo "no {java} on PATH: install a JRE in the lab host \
(openjdk-17-jre-headless) or pass java_home=" >&2; exit 3; }}
real=$(readlink -f "$j")
case "$real" in */bin/java) ;; *) echo "$j resolves to $real, not .../bin/java: pass \
java_home=" >&2; exit 3;; esac
echo "$real"
""", "locating the JRE")
    real = out.strip().splitlines()[-1]
    return real[: -len("/bin/java")], real


def _java_fails(java_bin: str) -> str:
    """Shell: exit 0 iff `java -version` fails; prints its complaint (first line)."""
    return (f"if out=$({_q(java_bin)} -version 2>&1); then echo \"java still runs: "
            f"$(echo \"$out\" | head -1)\" >&2; exit 1; fi\n"
            f"echo \"$out\" | head -1")


@contextmanager
def java_library_missing(host: Host, lib: str = "libjli.so", *, java: str = "java",
                         java_home: str | None = None,
                         journal: Journal | None = None) -> Iterator[FaultRecord]:
    """Hide a shared library of the JRE (renamed to <file>.lab-hidden): `java` fails to load.

    details: lib, path (the first match; paths lists all), java_home, observed (java's error).
    """
    home, java_bin = _java_home(host, java, java_home)
    out = _run(host, f"""
[ -d {_q(home)} ] || {{ echo "java home {home} does not exist" >&2; exit 3; }}
if find {_q(home)} -name {_q(lib + HIDDEN)} | grep -q .; then echo "{lib}{HIDDEN} is under \
{home}: a previous fault was not healed: run ./invoke lab.clean" >&2; exit 3; fi
found=$(find {_q(home)} -name {_q(lib)} \\( -type f -o -type l \\))
[ -n "$found" ] || {{ echo "no {lib} under {home}: name a library the JRE has, e.g. \
libjli.so or libjvm.so" >&2; exit 3; }}
echo "$found"
""", f"hiding {lib}")
    paths = out.split()
    plan = _Plan(
        "java_library_missing",
        {"lib": lib, "path": paths[0], "paths": paths, "java_home": home},
        inject="\n".join(f"mv -T {_q(p)} {_q(p + HIDDEN)}" for p in paths),
        heal="\n".join(_restore(p) for p in paths),
        in_effect=_java_fails(java_bin),
        healed="\n".join(_restored(p) for p in paths),
    )
    with _apply(host, plan, journal) as record:
        yield record


@contextmanager
def java_missing(host: Host, *, java: str = "java", java_home: str | None = None,
                 journal: Journal | None = None) -> Iterator[FaultRecord]:
    """Move the real `java` binary aside: `command -v java` and <java_home>/bin/java fail.

    details: path, java_home, observed (`command -v java` output: empty).
    """
    home, java_bin = _java_home(host, java, java_home)
    _run(host, f"[ -e {_q(java_bin)} ] || {{ echo '{java_bin} does not exist' >&2; exit 3; }}\n"
               f"{_refuse_if_unhealed(java_bin)}", "hiding java")
    lookup = "" if "/" in java else (
        f"if other=$(command -v {_q(java)}); then echo \"{java} still resolves: $other\" >&2; "
        f"exit 1; fi\n")
    plan = _Plan(
        "java_missing",
        {"path": java_bin, "java_home": home},
        inject=f"mv -T {_q(java_bin)} {_q(java_bin + HIDDEN)}",
        heal=_restore(java_bin),
        in_effect=f"[ ! -e {_q(java_bin)} ] || {{ echo '{java_bin} still exists' >&2; "
                  f"exit 1; }}\n{lookup}true",
        healed=_restored(java_bin),
    )
    with _apply(host, plan, journal) as record:
        yield record


@contextmanager
def java_not_executable(host: Host, *, java: str = "java", java_home: str | None = None,
                        journal: Journal | None = None) -> Iterator[FaultRecord]:
    """chmod a-x the real `java` binary (even root cannot exec it); heal restores the mode.

    details: path, mode (the original, octal), observed (java's error).
    """
    home, java_bin = _java_home(host, java, java_home)
    mode = _run(host, f"[ -f {_q(java_bin)} ] || {{ echo '{java_bin} is not a file' >&2; "
                      f"exit 3; }}\nstat -c %a {_q(java_bin)}", "making java non-executable")
    mode = mode.strip()
    if not re.fullmatch(r"[0-7]{3,4}", mode):
        raise FaultError(f"java_not_executable: unexpected mode {mode!r} of {java_bin}")
    if not int(mode, 8) & 0o111:
        raise FaultError(f"java_not_executable: {java_bin} already has mode {mode} (no x bit):"
                         " a previous fault was not healed? run `./invoke lab.clean`")
    p = _q(java_bin)
    plan = _Plan(
        "java_not_executable",
        {"path": java_bin, "java_home": home, "mode": mode},
        inject=f"chmod a-x {p}",
        heal=f"if [ -e {p} ]; then chmod {mode} {p}; fi",
        in_effect=_java_fails(java_bin),
        healed=f"[ \"$(stat -c %a {p})\" = {mode} ] || {{ echo \"{java_bin} has mode "
               f"$(stat -c %a {p}), expected {mode}\" >&2; exit 1; }}",
    )
    with _apply(host, plan, journal) as record:
        yield record


# -- crun ------------------------------------------------------------------------------------
def _crun_present(path: str) -> str:
    return (f"[ -x {_q(path)} ] || {{ echo '{path} is not an executable: install crun or pass "
            f"path=' >&2; exit 3; }}\n{_refuse_if_unhealed(path)}")


@contextmanager
def crun_missing(host: Host, path: str = "/usr/bin/crun", *,
                 journal: Journal | None = None) -> Iterator[FaultRecord]:
    """Move crun aside (<path>.lab-hidden). details: path, observed (another crun on PATH, if
    any: the driver would find that one)."""
    _run(host, _crun_present(path), "hiding crun")
    plan = _Plan(
        "crun_missing",
        {"path": path},
        inject=f"mv -T {_q(path)} {_q(path + HIDDEN)}",
        heal=_restore(path),
        in_effect=f"[ ! -e {_q(path)} ] || {{ echo '{path} still exists' >&2; exit 1; }}\n"
                  "command -v crun || true",
        healed=_restored(path),
    )
    with _apply(host, plan, journal) as record:
        yield record


def crun_wrapper(real: str, message: str, on: Sequence[str], token: str = "") -> str:
    """A POSIX sh stand-in for crun: for the subcommands in `on` it fails like crun does (a
    JSON error line in the --log file, the message on stderr, exit 1); anything else execs
    the real crun."""
    return f"""#!/bin/sh
# {WRAPPER_MARK} crun_failing {token}: installed by lab.faults, healed by lab.faults.sweep
real={_q(real)}
msg={_q(message)}
msg_json={_q(json.dumps(message))}
log=
sub=
want=
for arg in "$@"; do
  if [ -n "$want" ]; then
    [ "$want" = --log ] && log=$arg
    want=
    continue
  fi
  case $arg in
    --log=*) log=${{arg#--log=}} ;;
    --root|--log|--log-format|--log-level|--cgroup-manager|--handler) want=$arg ;;
    -*) ;;
    *) sub=$arg; break ;;
  esac
done
case $sub in
  {'|'.join(on)})
    log=${{log#file:}}
    case $log in
      ''|journald:*|syslog:*) ;;
      *) printf '{{"msg": %s, "level": "error", "time": "%s"}}\\n' "$msg_json" \\
           "$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)" >> "$log" ;;
    esac
    printf '%s\\n' "$msg" >&2
    exit 1 ;;
esac
exec "$real" "$@"
"""


@contextmanager
def crun_failing(host: Host, message: str = "lab fault: crun_failing injected this error",
                 on: Sequence[str] = ("run", "create"), path: str = "/usr/bin/crun", *,
                 journal: Journal | None = None) -> Iterator[FaultRecord]:
    """Replace crun by a wrapper that fails the `on` subcommands with `message` (as crun's
    JSON log line and on stderr) and passes everything else (--version, kill, delete...) to
    the real crun. `path` is never missing: the real binary is hard-linked aside and the
    wrapper renamed over it atomically; the heal renames it back.

    details: path, real (the hidden crun), message, on, observed (the probe's log line).
    """
    if not on or not all(re.fullmatch(r"[a-z][a-z-]*", sub) for sub in on):
        raise FaultError(f"crun_failing: on={on!r} must name crun subcommands, e.g. "
                         "('run', 'create')")
    _run(host, _crun_present(path), "wrapping crun")
    hidden, staged = path + HIDDEN, path + ".lab-wrapper"
    record_token = secrets.token_hex(4)
    probe_log = f"/tmp/.lab-crun-probe-{record_token}.log"
    plan = _Plan(
        "crun_failing",
        {"path": path, "real": hidden, "message": message, "on": list(on)},
        inject=(f"ln -fT {_q(path)} {_q(hidden)}\n"
                f"cat > {_q(staged)} <<'LAB_WRAPPER_EOF'\n"
                f"{crun_wrapper(hidden, message, on, record_token)}LAB_WRAPPER_EOF\n"
                f"chmod 0755 {_q(staged)}\n"
                f"mv -fT {_q(staged)} {_q(path)}"),
        heal=f"{_restore(path)}\nrm -f {_q(staged)}",
        in_effect=(f"rm -f {probe_log}\n"
                   f"if {_q(path)} --root /run/lab-fault-probe --log {probe_log} "
                   f"--log-format=json {_q(on[0])} lab-probe 2>/dev/null; then "
                   f"echo 'the wrapper did not fail {on[0]}' >&2; exit 1; fi\n"
                   f"{_q(path)} --version >/dev/null || {{ echo '{path} --version fails: "
                   f"the real crun is not reached' >&2; exit 1; }}\n"
                   f"cat {probe_log}; rm -f {probe_log}"),
        healed=(f"{_restored(path)}\n[ ! -e {_q(staged)} ] || "
                f"{{ echo '{staged} is still there' >&2; exit 1; }}"),
    )
    with _apply(host, plan, journal) as record:
        yield record


# -- network ---------------------------------------------------------------------------------
def _require_modules(host: Host, modules: Sequence[str]) -> None:
    for module in modules:
        res = host.sudo(f"modprobe {module}", check=False)
        if not res.ok:
            raise FaultError(
                f"kernel module {module} is not available on {host.name}: `modprobe {module}` "
                f"said {res.stderr.strip() or res.rc!r}. fix: install the running kernel's "
                "modules in the lab host (Debian's linux-image-amd64 ships them under "
                "/lib/modules/$(uname -r)) or use a kernel built with it")


def _ours(dev: str) -> str:
    return f"tc qdisc show dev {_q(dev)} | grep -q 'qdisc [a-z_]* {QDISC_HANDLE} root'"


@contextmanager
def network_delay(host: Host, delay_ms: float = 100, jitter_ms: float = 0,
                  loss_pct: float = 0, port: int | None = None, dev: str = "lo", *,
                  journal: Journal | None = None) -> Iterator[FaultRecord]:
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
    args = " ".join(netem)
    _require_modules(host, ["sch_netem"] + (["sch_prio", "cls_u32"] if port else []))
    _run(host, f"if {_ours(dev)}; then echo 'dev {dev} already has the lab qdisc: a previous "
               f"network fault was not healed: run `./invoke lab.clean`' >&2; exit 3; fi",
         "shaping traffic")
    d = _q(dev)
    if port is None:
        inject = f"tc qdisc add dev {d} root handle {QDISC_HANDLE} netem {args}"
    else:
        port = int(port)
        band = f"{QDISC_HANDLE}3"
        inject = "\n".join([
            f"tc qdisc add dev {d} root handle {QDISC_HANDLE} prio bands 3 priomap "
            + " ".join(["0"] * 16),  # all unmatched traffic in band 1: never delayed
            f"tc qdisc add dev {d} parent {band} handle {NETEM_HANDLE} netem {args}",
            f"tc filter add dev {d} parent {QDISC_HANDLE} protocol ip prio 1 u32 "
            f"match ip dport {port} 0xffff flowid {band}",
            f"tc filter add dev {d} parent {QDISC_HANDLE} protocol ip prio 1 u32 "
            f"match ip sport {port} 0xffff flowid {band}",
        ])
    plan = _Plan(
        "network_delay",
        {"dev": dev, "netem": args, "port": port},
        inject=inject,
        heal=f"if {_ours(dev)}; then tc qdisc del dev {d} root; fi",
        in_effect=f"tc qdisc show dev {d} | grep netem || {{ echo 'no netem qdisc on {dev}' "
                  f">&2; exit 1; }}",
        healed=f"if {_ours(dev)}; then echo 'the lab qdisc is still on {dev}' >&2; exit 1; fi",
    )
    with _apply(host, plan, journal) as record:
        yield record


@contextmanager
def connection_resets(host: Host, port: int, every: int = 1, new_only: bool = False, *,
                      journal: Journal | None = None) -> Iterator[FaultRecord]:
    """Answer TCP packets to `port` inside the lab host with a RST (iptables REJECT
    --reject-with tcp-reset in INPUT, which loopback traffic crosses).

    every=N resets one packet in N (statistic nth), so connections die part-way; new_only
    resets only connection attempts (SYN): the client sees "connection refused".
    details: port, rule (the iptables rule spec), observed.
    """
    if every < 1:
        raise FaultError(f"connection_resets: every={every} must be >= 1")
    _run(host, "command -v iptables >/dev/null || { echo 'iptables is not installed in the lab "
               "host: add the iptables package to the box' >&2; exit 3; }", "resetting "
               "connections")
    token = secrets.token_hex(4)
    spec = f"-p tcp --dport {int(port)}" + (" --syn" if new_only else "")
    if every > 1:
        # --packet every-1: the first packets (the SYN) pass, so connections die part-way
        spec += f" -m statistic --mode nth --every {every} --packet {every - 1}"
    spec += f" -m comment --comment {RULE_TAG}:{token} -j REJECT --reject-with tcp-reset"
    plan = _Plan(
        "connection_resets",
        {"port": int(port), "every": every, "new_only": new_only, "rule": spec},
        inject=f"iptables -w -I INPUT {spec}",
        heal=f"while iptables -w -C INPUT {spec} 2>/dev/null; do iptables -w -D INPUT {spec}; "
             "done",
        in_effect=f"iptables -w -C INPUT {spec} && iptables -w -S INPUT | grep {RULE_TAG}:{token}",
        healed=f"if iptables -w -S INPUT | grep -q {RULE_TAG}:{token}; then echo 'the rule "
               f"{RULE_TAG}:{token} is still in INPUT' >&2; exit 1; fi",
    )
    with _apply(host, plan, journal) as record:
        yield record


# -- the plugin process ----------------------------------------------------------------------
# The plugin runs as `<plugin_dir>/nomad-driver-java-crun` with no arguments; its per-container
# shims are the same binary with a bundle argument and _JAVA_CRUN_SHIM=1, and must survive.
PLUGIN_PIDS = rf"""
for d in /proc/[0-9]*; do
  mapfile -d '' -t argv < "$d/cmdline" 2>/dev/null || continue
  [ "${{#argv[@]}}" -eq 1 ] && [ "${{argv[0]##*/}}" = {PLUGIN_BINARY} ] || continue
  tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qx '_JAVA_CRUN_SHIM=1' && continue
  echo "${{d#/proc/}}"
done
true
"""


def plugin_pids(host: Host) -> list[int]:
    """Pids of running plugin processes (not their shims)."""
    return sorted(int(p) for p in host.sudo(PLUGIN_PIDS).stdout.split())


def kill_plugin(host: Host, *, journal: Journal | None = None) -> int:
    """SIGKILL the running java-crun plugin process(es); returns the (first) killed pid.

    Not a context manager: Nomad heals this itself by relaunching the plugin. The journal
    record is marked healed by wait_plugin_restarted().
    """
    pids = plugin_pids(host)
    if not pids:
        raise FaultError(f"no {PLUGIN_BINARY} process is running on {host.name}: start an agent "
                         "with the plugin loaded first (the `agent` fixture)")
    host.sudo(f"kill -KILL {' '.join(map(str, pids))}")
    record = (journal or JOURNAL).open(host, "plugin_killed", {"pids": pids})
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
        if record.name == "plugin_killed" and old_pid in record.details["pids"] and record.active:
            record.healed_at = time.time()
            record.details["new_pid"] = new_pid
    return new_pid


# -- sweep -----------------------------------------------------------------------------------
def _sweep_script(roots: Sequence[str]) -> str:
    return rf"""
for f in {STATE_DIR}/*.sh; do
  [ -e "$f" ] || continue
  if sh "$f"; then rm -f "$f"; echo "healed: ran $f"; else echo "FAILED: $f" >&2; fi
done
find {' '.join(_q(r) for r in roots)} -xdev -name '*{HIDDEN}' 2>/dev/null | while read -r h; do
  p=${{h%{HIDDEN}}}
  if {{ [ -e "$p" ] || [ -L "$p" ]; }} && ! grep -qs {WRAPPER_MARK} "$p"; then
    rm -f "$h"; echo "healed: dropped stale $h"
  else
    mv -fT "$h" "$p" && echo "healed: restored $p"
  fi
done
find {' '.join(_q(r) for r in roots)} -xdev -name '*.lab-wrapper' 2>/dev/null \
  | while read -r w; do rm -f "$w"; echo "healed: removed $w"; done
if j=$(command -v java) && real=$(readlink -f "$j") && [ -f "$real" ] && [ ! -x "$real" ]; then
  chmod 0755 "$real" && echo "healed: chmod 0755 $real"
fi
if command -v iptables >/dev/null; then
  iptables -w -S 2>/dev/null | grep -- '--comment "\?{RULE_TAG}' | sed 's/^-A /-D /' \
    | while read -r rule; do eval "iptables -w $rule" && echo "healed: iptables $rule"; done
fi
if command -v tc >/dev/null; then
  tc qdisc show 2>/dev/null | awk '$3 == "{QDISC_HANDLE}" && $4 == "dev" && $6 == "root" \
    {{print $5}}' | sort -u | while read -r dev; do
    tc qdisc del dev "$dev" root && echo "healed: tc qdisc on $dev"
  done
fi
true
"""


def sweep(host: Host, roots: Sequence[str] = SWEEP_ROOTS) -> list[str]:
    """Heal every fault this module can inject, from the host's own markers (pending heal
    scripts, *.lab-hidden files, wrappers, `lab-fault` iptables rules, the 1ab: qdisc),
    whatever the journal says. Idempotent; returns what it healed. Raises HealFailed if
    something could not be healed."""
    res = host.sudo(_sweep_script(roots), check=False, timeout=120)
    healed = [line for line in res.stdout.splitlines() if line.startswith("healed:")]
    if not res.ok or "FAILED" in res.stderr:
        raise HealFailed(f"lab.faults.sweep on {getattr(host, 'name', host)} could not heal "
                         f"everything:\n{res.stderr.strip()}\nfix: inspect with "
                         "`./invoke lab.ssh`")
    for record in JOURNAL.active():
        if record.host == getattr(host, "name", None) and record.name != "plugin_killed":
            record.healed_at = time.time()
            record.details["healed_by"] = "sweep"
    return healed


def scan(host: Host, roots: Sequence[str] = SWEEP_ROOTS) -> list[str]:
    """Fault traces still on the host (empty when every fault was healed)."""
    return [line for line in host.sudo(scan_script(roots), check=False).stdout.splitlines()
            if line.strip()]


def scan_script(roots: Sequence[str] = SWEEP_ROOTS) -> str:
    """The shell of scan(): one line per fault trace."""
    return rf"""
ls -1 {STATE_DIR}/*.sh 2>/dev/null | sed 's/^/heal-pending /'
find {' '.join(_q(r) for r in roots)} -xdev \( -name '*{HIDDEN}' -o -name '*.lab-wrapper' \) \
  2>/dev/null | sed 's/^/moved-aside /'
command -v iptables >/dev/null && iptables -w -S 2>/dev/null | grep -- '{RULE_TAG}' \
  | sed 's/^/iptables /'
command -v tc >/dev/null && tc qdisc show 2>/dev/null | grep ' {QDISC_HANDLE} ' \
  | sed 's/^/qdisc /'
true
"""
