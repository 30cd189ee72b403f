"""What a test asks about the lab host, in the spirit of pytest-testinfra: helpers, not shell.

Each helper is one SSH round trip (about a second under TCG) and returns plain data:

    probes.crun(lab_host, agent).of_alloc(alloc_id).pid     # an agent's crun containers
    probes.file(lab_host, path, checksum=True).sha256       # mode, owner, size, sha256
    probes.listeners(lab_host, [4646])                      # who listens on a port (ss)
    probes.task_dir(agent, alloc_id, "app")                 # a task's dir on the host
    probes.qdisc_stats(lab_host, "netem")                   # tc's counters of a qdisc
    probes.exec_in_task(lab_host, agent, alloc_id, ["sha256sum", "/local/app.jar"])

The helpers only read, except exec_in_task (runs a command inside a task's container),
occupy_ports (a listener for the whole `with`) and stop_unit (ends a transient unit).
Assertion helpers hide their frame from pytest's traceback (`__tracebackhide__`).
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from lab.core.wait import Pending, until
from lab.nomad.agent import NomadAgent
from lab.remote.host import CommandResult, LabHost
from lab.remote.layout import NOMAD_BIN


def _q(value: object) -> str:
    return shlex.quote(str(value))


# -- crun containers -------------------------------------------------------------------------
@dataclass(frozen=True)
class Container:
    """One container as `crun state` reports it."""

    id: str
    status: str  # created, running, stopped, paused
    pid: int
    bundle: str

    @classmethod
    def from_state(cls, state: dict) -> Container:
        return cls(state["id"], state.get("status", "?"), int(state.get("pid") or 0),
                   state.get("bundle", ""))


def parse_states(text: str) -> list[dict]:
    """Concatenated `crun state` JSON documents (one per container) -> their dicts."""
    decoder, found, pos = json.JSONDecoder(), [], 0
    text = text.strip()
    while pos < len(text):
        state, end = decoder.raw_decode(text, pos)
        found.append(state)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return found


class Crun:
    """The crun containers under one crun --root (an agent's driver keeps its own)."""

    def __init__(self, host: LabHost, root: str):
        self.host, self.root = host, root

    def __repr__(self) -> str:
        return f"Crun({self.root} on {self.host.name})"

    def ids(self) -> list[str]:
        return self.host.sudo(f"crun --root {_q(self.root)} list -q 2>/dev/null",
                              check=False).stdout.split()

    def containers(self) -> list[Container]:
        """Every container with its state, in one round trip."""
        root = _q(self.root)
        out = self.host.sudo(f"for c in $(crun --root {root} list -q 2>/dev/null); do "
                             f"crun --root {root} state \"$c\" 2>/dev/null; done",
                             check=False).stdout
        return [Container.from_state(s) for s in parse_states(out)]

    def state(self, container_id: str) -> dict:
        """`crun state <id>` as a dict (raises CommandFailed when crun does not know it)."""
        return json.loads(self.host.sudo(
            f"crun --root {_q(self.root)} state {_q(container_id)}").stdout)

    def running(self) -> dict[str, int]:
        """Running containers: id -> init pid (on the host)."""
        return {c.id: c.pid for c in self.containers() if c.status == "running"}

    def of_alloc(self, alloc_id: str) -> Container:
        """The one container of an allocation (its id starts with the alloc id)."""
        __tracebackhide__ = True
        found = [c for c in self.containers() if c.id.startswith(alloc_id)]
        assert len(found) == 1, f"crun containers of alloc {alloc_id} under {self.root}: {found}"
        return found[0]


def crun(host: LabHost, agent: NomadAgent) -> Crun:
    """The containers of this agent's driver (its state root's crun --root)."""
    return Crun(host, agent.crun_root)


# -- processes -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Process:
    pid: int
    pid_namespace: str  # e.g. "pid:[4026532301]"
    cgroup: str  # its cgroup v2 path, e.g. /nomad.slice/share.slice/<alloc>.app.scope/container


def process(host: LabHost, pid: int) -> Process:
    """The pid namespace and cgroup of a process on the lab host."""
    out = host.sudo(f"readlink /proc/{int(pid)}/ns/pid; "
                    f"sed -n 's/^0:://p' /proc/{int(pid)}/cgroup").stdout.split("\n")
    return Process(int(pid), out[0].strip(), out[1].strip() if len(out) > 1 else "")


def cgroup_value(host: LabHost, cgroup: str, name: str) -> str:
    """A cgroup v2 interface file (memory.max, pids.max...) of `cgroup` (a path as in
    /proc/<pid>/cgroup), stripped."""
    return host.sudo(f"cat {_q('/sys/fs/cgroup' + cgroup + '/' + name)}").stdout.strip()


def process_count(host: LabHost) -> int:
    """How many processes the lab host runs (its /proc/<pid> entries)."""
    return int(host.sudo("ls /proc | grep -c '^[0-9][0-9]*$'").stdout.strip())


def hostname(host: LabHost) -> str:
    return host.run("hostname").stdout.strip()


def kernel_release(host: LabHost) -> str:
    return host.run("uname -r").stdout.strip()


# -- files -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileInfo:
    """A file on the lab host as root sees it; exists=False leaves the rest empty."""

    path: str
    exists: bool
    mode: int = 0  # permission bits with setuid/setgid/sticky, e.g. 0o755
    owner: str = ""
    group: str = ""
    size: int = 0
    type: str = ""  # stat's %F: "regular file", "directory", "symbolic link"...
    sha256: str | None = None  # with checksum=True, for a regular file

    @property
    def is_file(self) -> bool:
        return self.type.startswith("regular")


def parse_file(path: str, out: str) -> FileInfo:
    lines = out.splitlines()
    if not lines or lines[0] == "missing":
        return FileInfo(path, False)
    mode, owner, group, size, kind = lines[0].split(" ", 4)
    sha = lines[1].split()[0] if len(lines) > 1 and lines[1].strip() else None
    return FileInfo(path, True, int(mode, 8), owner, group, int(size), kind, sha)


def file(host: LabHost, path: str, checksum: bool = False) -> FileInfo:
    """Mode, owner, group, size and type of `path` (not following a final symlink); with
    checksum, the sha256 of a regular file too (reads the whole file: seconds for 200 MB)."""
    p = _q(path)
    digest = f"\n  [ -f {p} ] && sha256sum -- {p}" if checksum else ""
    out = host.sudo(f"if [ -e {p} ] || [ -L {p} ]; then\n  stat -c '%a %U %G %s %F' -- {p}"
                    f"{digest}\nelse echo missing; fi; true").stdout
    return parse_file(path, out)


def files(host: LabHost, paths: Iterable[str]) -> dict[str, FileInfo]:
    """file() of several paths in one round trip (no checksums)."""
    paths = list(paths)
    script = "; ".join(f"echo '## {i}'; if [ -e {_q(p)} ] || [ -L {_q(p)} ]; then stat -c "
                       f"'%a %U %G %s %F' -- {_q(p)}; else echo missing; fi"
                       for i, p in enumerate(paths))
    out = host.sudo(f"{script}; true").stdout if paths else ""
    chunks = re.split(r"^## (\d+)\n", out, flags=re.M)[1:]
    found = {paths[int(i)]: parse_file(paths[int(i)], body) for i, body in
             zip(chunks[::2], chunks[1::2], strict=True)}
    return {p: found.get(p, FileInfo(p, False)) for p in paths}


# -- Nomad's directories on the host -----------------------------------------------------------
def alloc_dir(agent: NomadAgent, alloc_id: str) -> str:
    """An allocation's directory on the lab host (Nomad's <data_dir>/alloc/<alloc id>); its
    shared alloc dir (/alloc in the container) is alloc_dir(...) + "/alloc"."""
    return f"{agent.dir}/data/alloc/{alloc_id}"


def task_dir(agent: NomadAgent, alloc_id: str, task: str = "app") -> str:
    """A task's directory on the lab host: its local/ and secrets/ (the container's /local,
    /secrets) are under it."""
    return f"{alloc_dir(agent, alloc_id)}/{task}"


# -- ports -----------------------------------------------------------------------------------
def parse_ss_users(out: str) -> dict[int, set[str]]:
    """`ss -Htlnp` lines -> port -> names of the processes listening on it."""
    found: dict[int, set[str]] = {}
    for row in out.splitlines():
        fields = row.split()
        if len(fields) < 4:
            continue
        port = fields[3].rsplit(":", 1)[-1]
        if not port.isdigit():
            continue
        names = {n.rstrip("-") for n in re.findall(r'\("([^"]+)",pid=', row)}
        found.setdefault(int(port), set()).update(names)
    return found


def listeners(host: LabHost, ports: Iterable[int]) -> dict[int, set[str]]:
    """Who listens on each of `ports` (TCP) in the lab host: port -> process names (the
    kernel keeps 15 characters of a name, so systemd-socket-activate shows as
    "systemd-socket", its trailing dash dropped).
    A port nobody listens on is absent."""
    ports = sorted({int(p) for p in ports})
    filt = " or ".join(f"sport = :{p}" for p in ports)
    out = host.sudo(f"ss -Htlnp {_q(filt)}", check=False).stdout
    return {p: names for p, names in parse_ss_users(out).items() if p in ports}


def listening(host: LabHost, port: int) -> bool:
    return int(port) in listeners(host, [port])


@contextmanager
def occupy_ports(host: LabHost, ports: Sequence[int], name: str,
                 timeout: float) -> Iterator[str]:
    """Listeners on `ports` (all addresses) in the lab host for the whole `with`, from a
    transient unit (systemd-socket-activate) that stops by itself after 15 minutes should
    this process die. Yields the unit's name."""
    unit = f"{name}-{secrets.token_hex(2)}"
    listen = " ".join(f"-l {int(p)}" for p in ports)
    host.sudo(f"systemd-run --unit={_q(unit)} --collect --quiet -p RuntimeMaxSec=900 "
              f"systemd-socket-activate {listen} sleep infinity")
    try:
        until(lambda: all(listeners(host, ports).get(p) for p in ports)
              or Pending(listeners(host, ports)), timeout, f"{unit} listening on {list(ports)}")
        yield unit
    finally:
        stop_unit(host, unit)


# -- systemd units ---------------------------------------------------------------------------
def unit_active(host: LabHost, unit: str) -> bool:
    return host.sudo(f"systemctl is-active --quiet {_q(unit)}", check=False).ok


def stop_unit(host: LabHost, unit: str, kill: bool = False) -> None:
    """Stop a unit and forget it; with kill, SIGKILL every process of it first (whatever its
    KillMode). Never fails: a unit already gone is fine."""
    u = _q(unit)
    first = f"systemctl kill --signal=KILL {u}; " if kill else ""
    host.sudo(f"{first}systemctl stop {u}; systemctl reset-failed {u}; true", check=False)


# -- traffic control -------------------------------------------------------------------------
def parse_qdisc_stats(out: str, kind: str) -> dict[str, int] | None:
    """Counters of the first `kind` qdisc (netem, prio...) in `tc -s qdisc show` output."""
    at = re.search(rf"^qdisc {re.escape(kind)} ", out, re.M)
    if not at:
        return None
    sent = re.search(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)",
                     out[at.start():])
    if not sent:
        return None
    return {"bytes": int(sent[1]), "packets": int(sent[2]), "dropped": int(sent[3]),
            "overlimits": int(sent[4])}


def qdisc_stats(host: LabHost, kind: str = "netem", dev: str = "lo") -> dict[str, int]:
    """Bytes, packets, drops and overlimits through the `kind` qdisc on `dev` (tc -s)."""
    __tracebackhide__ = True
    out = host.sudo(f"tc -s qdisc show dev {_q(dev)}").stdout
    stats = parse_qdisc_stats(out, kind)
    assert stats is not None, f"no {kind} qdisc statistics on {dev} in:\n{out}"
    return stats


# -- inside a task's container -----------------------------------------------------------------
def exec_in_task(host: LabHost, agent: NomadAgent, alloc_id: str, argv: Sequence[str],
                 task: str = "app", timeout: float | None = None) -> CommandResult:
    """Run argv inside a running task's container, as the task's user, through Nomad
    (`nomad alloc exec`, which the driver serves with `crun exec`): the command's exit code,
    stdout and stderr, whatever they are (check .ok)."""
    cmd = (f"{NOMAD_BIN} alloc exec -address=http://127.0.0.1:{int(agent.ports['http'])} "
           f"-i=false -t=false -task {_q(task)} {_q(alloc_id)} "
           + " ".join(_q(a) for a in argv))
    return host.run(cmd, check=False, timeout=timeout)


def sha256_in_task(host: LabHost, agent: NomadAgent, alloc_id: str, paths: Sequence[str],
                   task: str = "app") -> dict[str, str]:
    """sha256 of files as the task itself reads them, inside its container (sha256sum of the
    host's /usr, bound read-only in the container): path -> hex digest."""
    __tracebackhide__ = True
    res = exec_in_task(host, agent, alloc_id, ["sha256sum", "--", *paths], task)
    assert res.ok, (f"sha256sum {list(paths)} in task {task} of alloc {alloc_id} exited "
                    f"{res.rc}: {res.stderr.strip() or res.stdout.strip()}")
    sums = {}
    for row in res.stdout.splitlines():
        digest, _, path = row.partition("  ")
        sums[path] = digest
    return sums
