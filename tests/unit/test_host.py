"""host: SSHSpec parsing, LabHost.run wrapping and errors, ports and tunnels (fabric faked)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import invoke
import paramiko
import pytest

from lab.core.errors import CommandFailed, LabError
from lab.remote.host import (
    ANCESTRY_WALK,
    CommandResult,
    ConnectionLost,
    LabHost,
    SSHSpec,
    free_local_port,
    sshd_session_pids,
)

# -- SSHSpec ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url, host, port, user", [
    ("ssh://lab.example", "lab.example", 22, "root"),
    ("ssh://dev@lab.example", "lab.example", 22, "dev"),
    ("ssh://dev@127.0.0.1:2222", "127.0.0.1", 2222, "dev"),
    ("ssh://127.0.0.1:2200", "127.0.0.1", 2200, "root"),
    ("ssh://root@[::1]:2022", "::1", 2022, "root"),
])
def test_sshspec_from_url(url, host, port, user):
    spec = SSHSpec.from_url(url)
    assert (spec.host, spec.port, spec.user, spec.key_file) == (host, port, user, None)


def test_sshspec_url_round_trips_and_key_is_expanded():
    spec = SSHSpec.from_url("ssh://dev@127.0.0.1:2222", key_file="~/.ssh/lab")
    assert spec.url == "ssh://dev@127.0.0.1:2222"
    assert spec.key_file == Path.home() / ".ssh" / "lab"
    assert SSHSpec.from_url(spec.url).url == spec.url


@pytest.mark.parametrize("url", ["http://lab.example", "lab.example:22", "root@lab.example",
                                 "ssh://", "vagrant"])
def test_sshspec_rejects_what_is_not_an_ssh_url_and_says_the_form(url):
    with pytest.raises(LabError, match=r"use ssh://user@host\[:port\]"):
        SSHSpec.from_url(url)


# -- LabHost.run -----------------------------------------------------------------------------


class FakeConnection:
    """Stands in for fabric.Connection: records run/put/close, answers from a queue."""

    def __init__(self):
        self.runs: list[tuple[str, dict]] = []
        self.puts: list[tuple[object, str]] = []
        self.answers: list[object] = []
        self.closed = 0
        self.forwards: list[tuple[str, dict]] = []
        self.put_error: BaseException | None = None

    def run(self, cmd, **kwargs):
        self.runs.append((cmd, kwargs))
        answer = self.answers.pop(0) if self.answers else (0, "", "")
        if isinstance(answer, BaseException):
            self.transport.active = False  # an SSH error here means the connection dropped
            raise answer
        rc, out, err = answer
        if rc == -1:  # paramiko's "no exit status": the channel closed under the command
            self.connected = False
        return SimpleNamespace(return_code=rc, stdout=out, stderr=err)

    def put(self, local, remote):
        if self.put_error:
            raise self.put_error
        data = local.getvalue() if isinstance(local, io.BytesIO) else local
        self.puts.append((data, remote))

    def close(self):
        self.closed += 1
        self.connected = False

    # -- what LabHost uses to (re)connect and to tunnel -------------------------------------
    connected = True
    open_error: BaseException | None = None  # every open() raises it while set
    opened = 0

    @property
    def is_connected(self):
        return self.connected and self.transport.is_active()

    def open(self):
        if self.open_error:
            raise self.open_error
        self.opened += 1
        self.transport = FakeTransport()
        self.connected = True

    @property
    def client(self):
        return SimpleNamespace(get_transport=lambda: self.transport)

    def sftp(self):
        return SimpleNamespace(get_channel=lambda: SimpleNamespace(settimeout=lambda s: None))


class FakeTransport:
    """A paramiko Transport whose channels are socketpairs served by an echo thread."""

    def __init__(self):
        self.active = True
        self.channels: list[tuple] = []
        self.port_forwards: list[tuple] = []

    def is_active(self):
        return self.active

    def open_channel(self, kind, dest, origin):
        if not self.active:
            raise EOFError("transport closed")
        ours, theirs = socket.socketpair()
        self.channels.append((kind, dest))

        def echo():
            with theirs:
                while data := theirs.recv(1024):
                    theirs.sendall(b"echo:" + data)
        threading.Thread(target=echo, daemon=True).start()
        return ours

    def request_port_forward(self, address, port, handler=None):
        self.port_forwards.append((address, port or 24242))
        return port or 24242

    def cancel_port_forward(self, address, port):
        self.port_forwards.remove((address, port))


def make_host(user="root", command_timeout=120) -> tuple[LabHost, FakeConnection]:
    host = LabHost(SSHSpec("127.0.0.1", 2222, user), name="vm", command_timeout=command_timeout)
    conn = FakeConnection()
    conn.transport = FakeTransport()
    host._conn = conn
    return host, conn


@pytest.mark.parametrize("user, sudo, prefix", [
    ("root", False, "bash -c "),
    ("root", True, "bash -c "),
    ("vagrant", False, "bash -c "),
    ("vagrant", True, "sudo -n bash -c "),
])
def test_run_wraps_in_bash_and_uses_sudo_n_only_for_non_root(user, sudo, prefix):
    host, conn = make_host(user)
    host.run("echo 'a b' && id -u", sudo=sudo)
    cmd, kwargs = conn.runs[0]
    assert cmd == prefix + "'echo '\"'\"'a b'\"'\"' && id -u'"
    assert kwargs == {"hide": True, "warn": True, "in_stream": False, "timeout": 120}


def test_sudo_helper_is_run_with_sudo():
    host, conn = make_host("vagrant")
    host.sudo("true")
    assert conn.runs[0][0].startswith("sudo -n ")


def test_run_returns_the_result_and_honours_an_explicit_timeout():
    host, conn = make_host(command_timeout=7)
    conn.answers.append((0, "out\n", "err\n"))
    result = host.run("uname -r", timeout=3)
    assert result == CommandResult("uname -r", 0, "out\n", "err\n") and result.ok
    assert conn.runs[0][1]["timeout"] == 3
    host.run("uname -r")
    assert conn.runs[1][1]["timeout"] == 7


def test_check_raises_command_failed_naming_host_command_rc_stderr_and_hint():
    host, conn = make_host()
    conn.answers.append((3, "", "crun: no such container\n"))
    with pytest.raises(CommandFailed) as info:
        host.run("crun state x", hint="is the task running?")
    exc = info.value
    assert (exc.host, exc.cmd, exc.rc) == ("vm", "crun state x", 3)
    assert str(exc) == ("on vm: `crun state x` exited 3:\n    crun: no such container\n"
                        "fix: is the task running?")


def test_check_false_returns_the_failure():
    host, conn = make_host()
    conn.answers.append((1, "", "nope"))
    result = host.run("false", check=False)
    assert not result.ok and result.rc == 1 and result.stderr == "nope"


def test_a_command_timeout_becomes_command_failed_with_a_fix():
    host, conn = make_host()
    conn.answers.append(invoke.CommandTimedOut(SimpleNamespace(), 5))
    with pytest.raises(CommandFailed) as info:
        host.run("sleep 100")
    assert info.value.rc is None
    assert "timed out after 5s" in str(info.value) and "LAB_TIMEOUT_SCALE" in str(info.value)


@pytest.mark.parametrize("error", [paramiko.SSHException("Error reading SSH protocol banner"),
                                   ConnectionResetError("reset by peer"), EOFError()])
def test_a_first_connection_that_fails_is_command_failed_at_once_with_a_fix(error):
    host, conn = make_host()
    conn.answers.append(error)
    with pytest.raises(CommandFailed) as info:
        host.run("true")
    assert "SSH failed" in str(info.value) and "invoke lab.status" in str(info.value)
    assert "ssh://root@127.0.0.1:2222" in str(info.value)
    assert conn.closed == 1, "the next call must reconnect"


def test_exists_and_read_file():
    host, conn = make_host("vagrant")
    conn.answers += [(0, "", ""), (1, "", ""), (0, "content", ""), (1, "", "No such file")]
    assert host.exists("/opt/lab/bin/nomad") is True
    assert host.exists("/missing") is False
    assert host.read_file("/etc/x") == "content"
    assert host.read_file("/missing", missing_ok=True) == ""
    assert all(cmd.startswith("sudo -n ") for cmd, _ in conn.runs)
    conn.answers.append((1, "", "No such file"))
    with pytest.raises(CommandFailed):
        host.read_file("/missing")


def test_write_file_uploads_to_tmp_then_installs_with_mode():
    host, conn = make_host()
    host.write_file("/var/lib/nomad lab/agent.hcl", "name = \"x\"\n", mode="0600")
    (data, tmp), = conn.puts
    assert data == b'name = "x"\n' and tmp.startswith("/tmp/.lab-upload-")
    cmd = conn.runs[0][0]
    assert f"install -D -m 0600 {tmp} " in cmd and "nomad lab/agent.hcl" in cmd
    assert f"rm -f {tmp}" in cmd


def test_put_installs_and_keeps_the_install_exit_code(tmp_path):
    host, conn = make_host()
    local = tmp_path / "nomad"
    local.write_text("bin")
    host.put(local, "/opt/lab/bin/nomad", mode="0755")
    (src, tmp), = conn.puts
    assert src == str(local)
    assert "install -D -m 0755" in conn.runs[0][0] and "exit $rc" in conn.runs[0][0]


def test_put_failure_names_the_files():
    host, conn = make_host()
    conn.put_error = OSError("No space left on device")
    with pytest.raises(CommandFailed, match=r"put /x/nomad -> /opt/lab/bin/nomad"):
        host.put("/x/nomad", "/opt/lab/bin/nomad")


# -- ports and tunnels -----------------------------------------------------------------------

SS_OUTPUT = """127.0.0.1:20001
[::]:20003
*:20005
0.0.0.0:*
[::ffff:127.0.0.1]:20000
"""


def test_free_ports_excludes_every_port_in_use():
    host, conn = make_host()
    conn.answers.append((0, SS_OUTPUT, ""))
    ports = host.free_ports(3, low=20000, high=20007)
    assert sorted(ports) == [20002, 20004, 20006]
    assert "ss -Htanu" in conn.runs[0][0]


def test_free_ports_are_distinct_and_in_range():
    host, conn = make_host()
    conn.answers.append((0, "", ""))
    ports = host.free_ports(50, low=30000, high=30100)
    assert len(set(ports)) == 50 and all(30000 <= p < 30100 for p in ports)


def test_free_local_port_is_bindable():
    port = free_local_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def talk(port: int, text: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(text)
        return sock.recv(1024)


def test_forward_local_listens_before_it_yields_and_tunnels_to_the_remote_port():
    """A request sent at once must be accepted (Fabric bound its port in a thread later, and
    an agent's first API call was refused)."""
    host, conn = make_host()
    with host.forward_local(4646) as local_port:
        assert talk(local_port, b"GET /") == b"echo:GET /"
    assert conn.transport.channels == [("direct-tcpip", ("127.0.0.1", 4646))]
    with pytest.raises(OSError):
        talk(local_port, b"closed")


def test_a_tunnel_goes_on_through_the_reopened_connection_after_a_drop():
    host, conn = make_host()
    host.run("true")  # connected once: a drop from now on is re-opened
    with host.forward_remote(8080) as remote_port, host.forward_local(4646) as local_port:
        assert talk(local_port, b"one") == b"echo:one"
        conn.transport.active = False  # sshd killed on the lab host
        assert talk(local_port, b"two") == b"echo:two"
        assert conn.opened == 1
        # The tunnel noticed the drop first: the artifact server's forward came back with it.
        assert conn.transport.port_forwards == [("127.0.0.1", remote_port)]


def test_a_remote_forward_is_requested_again_on_the_same_port_after_a_drop():
    host, conn = make_host()
    conn.answers += [(0, "", ""), EOFError("dropped"), (0, "ok", "")]
    host.run("true")
    with host.forward_remote(8080) as remote_port:
        assert conn.transport.port_forwards == [("127.0.0.1", remote_port)]
        assert host.run("echo ok").stdout == "ok"  # dropped, re-opened, run again
        assert conn.opened == 1
        assert conn.transport.port_forwards == [("127.0.0.1", remote_port)]
    assert conn.transport.port_forwards == []


def test_a_command_whose_connection_dropped_is_run_again_once_reconnected():
    host, conn = make_host()
    conn.answers += [(0, "", ""), EOFError("dropped"), (0, "ok", "")]
    host.run("true")
    assert host.run("echo ok").stdout == "ok"
    assert [cmd for cmd, _ in conn.runs].count("bash -c 'echo ok'") == 2 and conn.opened == 1


def test_a_channel_closed_without_exit_status_counts_as_a_drop():
    host, conn = make_host()
    conn.answers += [(0, "", ""), (-1, "", ""), (0, "ok", "")]
    host.run("true")
    assert host.run("echo ok").stdout == "ok" and conn.opened == 1


def test_a_host_that_stays_unreachable_fails_at_once_saying_the_connection_dropped():
    host, conn = make_host()
    host.reconnect_timeout = 0.3
    conn.answers += [(0, "", ""), EOFError("dropped")]
    host.run("true")
    conn.open_error = ConnectionRefusedError("Connection refused")
    with pytest.raises(ConnectionLost) as info:
        host.run("echo ok")
    message = str(info.value)
    assert "the SSH connection to the lab host dropped at" in message
    assert "could not be re-opened: tried until" in message
    assert "Connection refused" in message and "invoke lab.status" in message


def test_forward_remote_lets_the_lab_host_pick_the_port_and_cancels_it_after():
    host, conn = make_host()
    with host.forward_remote(8080) as remote_port:
        assert remote_port == 24242
        assert conn.transport.port_forwards == [("127.0.0.1", 24242)]
    assert host._remote_forwards == []


def test_a_host_restarted_after_it_was_declared_lost_gets_its_remote_forwards_back():
    """Fabric re-opens a closed connection by itself at the next command, without our
    forwards: the artifact server's tunnel must come back on the restarted host too."""
    host, conn = make_host()
    host.run("true")
    with host.forward_remote(8080) as remote_port:
        host.declare_lost("its kernel panicked")
        assert conn.closed and not conn.is_connected
        host.recovered()
        host.run("true")
        assert conn.opened == 1
        assert conn.transport.port_forwards == [("127.0.0.1", remote_port)]


@pytest.mark.parametrize("walk, expected", [
    # OpenSSH 10 (trixie): per-connection processes are sshd-session; sshd is the listener.
    ("7225 bash bash\n7224 sshd-session sshd-session: lab@notty\n"
     "7201 sshd-session sshd-session: lab [priv]\n"
     "3944 sshd sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups\n", [7224, 7201]),
    # OpenSSH 9.2 (bookworm): all three are sshd.
    ("912 bash bash\n911 sshd sshd: lab@notty\n900 sshd sshd: lab [priv]\n"
     "480 sshd sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups\n", [911, 900]),
    # root's login has no privilege-separated child: one process, and still not the listener.
    ("55 bash bash\n50 sshd sshd: root@notty\n"
     "12 sshd sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups\n", [50]),
])
def test_the_sessions_sshd_processes_are_found_and_never_the_listener(walk, expected):
    assert sshd_session_pids(walk) == expected


def test_the_ancestry_walk_run_by_bash_climbs_from_its_shell_through_us_to_init():
    """The walk session_pids runs on the lab host, run here by real bash: it ends, and names
    its own shell and this test's process (its parent) with their names."""
    res = subprocess.run(["bash", "-c", ANCESTRY_WALK], capture_output=True, text=True,
                         timeout=10)
    lines = [line.split(" ", 2) for line in res.stdout.splitlines()]
    assert lines[0][1] == "bash", res.stdout
    assert any(pid == str(os.getpid()) and name.startswith("python")
               for pid, name, *_ in lines), res.stdout
