"""LabHost: one object for the lab host over SSH (Fabric), whatever is behind it.

The Vagrant VM and an `ssh://user@host[:port]` target go through the same code: everything
after the VM step only sees an SSHSpec. Commands return a CommandResult; failures raise
CommandFailed naming the host, the command, its exit code and the tail of its stderr.
"""

from __future__ import annotations

import io
import random
import shlex
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import fabric
import invoke
import paramiko

from lab.core.errors import CommandFailed, LabError
from lab.core.wait import Pending, until

SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"


@dataclass(frozen=True)
class SSHSpec:
    host: str
    port: int
    user: str
    key_file: Path | None = None

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: str, key_file: str | Path | None = None) -> SSHSpec:
        parsed = urlparse(url)
        if parsed.scheme != "ssh" or not parsed.hostname:
            raise LabError(f"target {url!r} is not an ssh:// URL: use ssh://user@host[:port]")
        return cls(parsed.hostname, parsed.port or 22, parsed.username or "root",
                   Path(key_file).expanduser() if key_file else None)


@dataclass
class CommandResult:
    cmd: str
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


class LabHost:
    """Run commands, move files and open tunnels on the lab host."""

    def __init__(self, spec: SSHSpec, name: str = "lab", connect_timeout: float = 30,
                 command_timeout: float = 120):
        self.spec, self.name = spec, name
        self.command_timeout = command_timeout
        connect_kwargs: dict = {"allow_agent": False, "look_for_keys": spec.key_file is None,
                                "banner_timeout": connect_timeout,
                                "auth_timeout": connect_timeout}
        if spec.key_file:
            connect_kwargs["key_filename"] = [str(spec.key_file)]
        self._conn = fabric.Connection(
            spec.host, user=spec.user, port=spec.port, connect_timeout=connect_timeout,
            connect_kwargs=connect_kwargs,
            config=fabric.Config(overrides={"load_ssh_configs": False}),
        )

    def __repr__(self) -> str:
        return f"LabHost({self.name} {self.spec.url})"

    @property
    def is_root(self) -> bool:
        return self.spec.user == "root"

    # -- commands ------------------------------------------------------------------------
    def run(self, cmd: str, *, check: bool = True, timeout: float | None = None,
            sudo: bool = False, hint: str = "") -> CommandResult:
        """Run `cmd` with bash; with sudo=True as root (sudo -n unless we are root)."""
        wrapped = f"bash -c {shlex.quote(cmd)}"
        if sudo and not self.is_root:
            wrapped = f"sudo -n {wrapped}"
        try:
            res = self._conn.run(wrapped, hide=True, warn=True, in_stream=False,
                                 timeout=timeout or self.command_timeout)
        except invoke.CommandTimedOut as exc:
            raise CommandFailed(self.name, cmd, None, f"timed out after {exc.timeout}s",
                                hint=hint or "the lab host is slow or the command hangs; "
                                "raise LAB_TIMEOUT_SCALE or inspect with `invoke lab.ssh`") from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._conn.close()  # next call reconnects
            raise CommandFailed(self.name, cmd, None, f"SSH failed: {exc}",
                                hint=f"is the lab host up? `invoke lab.status` "
                                f"(target {self.spec.url})") from exc
        result = CommandResult(cmd, res.return_code, res.stdout, res.stderr)
        if check and not result.ok:
            raise CommandFailed(self.name, cmd, result.rc, result.stderr, result.stdout, hint)
        return result

    def sudo(self, cmd: str, **kwargs) -> CommandResult:
        return self.run(cmd, sudo=True, **kwargs)

    def open_channel(self, cmd: str, sudo: bool = False):
        """Start `cmd` on a channel of its own and return it (paramiko Channel): for a
        command that must live as long as we hold the channel (the lab host's lease)."""
        wrapped = f"bash -c {shlex.quote(cmd)}"
        if sudo and not self.is_root:
            wrapped = f"sudo -n {wrapped}"
        try:
            self._conn.open()
            channel = self._conn.client.get_transport().open_session()
            channel.exec_command(wrapped)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise CommandFailed(self.name, cmd, None, f"SSH failed: {exc}",
                                hint=f"is the lab host up? `invoke lab.status` "
                                f"(target {self.spec.url})") from exc
        return channel

    def run_script(self, name: str, args: list, **kwargs) -> CommandResult:
        """Run lab/remote/scripts/<name> with `args` on the lab host in one round trip, as root."""
        return self.sudo(script_command(name, args), **kwargs)

    def exists(self, path: str) -> bool:
        return self.sudo(f"test -e {shlex.quote(path)}", check=False).ok

    def read_file(self, path: str, *, missing_ok: bool = False) -> str:
        res = self.sudo(f"cat {shlex.quote(path)}", check=not missing_ok)
        return res.stdout if res.ok else ""

    def write_file(self, path: str, content: str, mode: str = "0644") -> None:
        tmp = f"/tmp/.lab-upload-{random.getrandbits(40):x}"
        self._conn.put(io.BytesIO(content.encode()), tmp)
        self.sudo(f"install -D -m {mode} {tmp} {shlex.quote(path)} && rm -f {tmp}")

    def put(self, local: str | Path, remote: str, mode: str = "0644") -> None:
        """Copy a file to `remote` (any path: staged in /tmp, installed as root)."""
        tmp = f"/tmp/.lab-upload-{random.getrandbits(40):x}"
        try:
            self._conn.put(str(local), tmp)
        except (paramiko.SSHException, OSError) as exc:
            raise CommandFailed(self.name, f"put {local} -> {remote}", None, str(exc)) from exc
        self.sudo(f"install -D -m {mode} {tmp} {shlex.quote(remote)}; rc=$?; rm -f {tmp}; "
                  "exit $rc")

    def get(self, remote: str, local: str | Path) -> None:
        self._conn.get(remote, str(local))

    # -- ports and tunnels ---------------------------------------------------------------
    def free_ports(self, count: int, low: int = 20000, high: int = 32000) -> list[int]:
        """Ports nothing listens on (TCP or UDP) on the lab host, picked at random."""
        used = {int(line.rsplit(":", 1)[-1]) for line in
                self.run("ss -Htanu | awk '{print $5}'", check=False).stdout.split()
                if line.rsplit(":", 1)[-1].isdigit()}
        pool = [p for p in range(low, high) if p not in used]
        return random.sample(pool, count)

    @contextmanager
    def forward_local(self, remote_port: int, remote_host: str = "127.0.0.1") -> Iterator[int]:
        """Tunnel 127.0.0.1:<yielded port> on this machine to remote_host:remote_port there."""
        local_port = free_local_port()
        with self._conn.forward_local(local_port=local_port, remote_port=remote_port,
                                      remote_host=remote_host, local_host="127.0.0.1"):
            # Fabric binds the local port in its tunnel thread, after forward_local returns:
            # a request sent at once was refused (seen when an agent's first API call came
            # right after its start). Wait until the port is taken.
            until(lambda: local_port_in_use(local_port) or Pending("not listening yet"),
                  10, f"local tunnel port 127.0.0.1:{local_port} listening", interval=0.01,
                  max_interval=0.1)
            yield local_port

    @contextmanager
    def forward_remote(self, local_port: int) -> Iterator[int]:
        """Expose 127.0.0.1:local_port of this machine as 127.0.0.1:<yielded port> there."""
        (remote_port,) = self.free_ports(1)
        # Keywords: fabric's order is (remote_port, local_port, remote_host, local_host).
        with self._conn.forward_remote(remote_port=remote_port, local_port=local_port,
                                       remote_host="127.0.0.1", local_host="127.0.0.1"):
            yield remote_port

    def close(self) -> None:
        self._conn.close()


def script_command(name: str, args: list) -> str:
    """The command line that runs lab/remote/scripts/<name> remotely: its text travels inline."""
    script = (SCRIPTS_DIR / name).read_text()
    return f"bash -c {shlex.quote(script)} {name} " + " ".join(shlex.quote(str(a)) for a in args)


def local_port_in_use(port: int) -> bool:
    """Something listens on 127.0.0.1:port (a connection is accepted, then closed at once).
    Not probed by binding: a bind of ours could take the port from the thread about to."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

