"""host: SSHSpec parsing, LabHost.run wrapping and errors, ports and tunnels (fabric faked)."""

from __future__ import annotations

import inspect
import io
import socket
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import fabric
import invoke
import paramiko
import pytest

from lab.core.errors import CommandFailed, LabError
from lab.remote.host import CommandResult, LabHost, SSHSpec, free_local_port

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
            raise answer
        rc, out, err = answer
        return SimpleNamespace(return_code=rc, stdout=out, stderr=err)

    def put(self, local, remote):
        if self.put_error:
            raise self.put_error
        data = local.getvalue() if isinstance(local, io.BytesIO) else local
        self.puts.append((data, remote))

    def close(self):
        self.closed += 1

    def _forward(self, kind, *args, **kwargs):
        # Bind against fabric's real signature: a wrong argument order shows up here.
        real = getattr(fabric.Connection, kind)
        bound = inspect.signature(real).bind(self, *args, **kwargs)
        bound.apply_defaults()
        params = dict(bound.arguments)
        params.pop("self")
        self.forwards.append((kind, params))

    listen_after = 0.0  # Fabric binds the local port in a thread, a moment after returning

    @contextmanager
    def forward_local(self, *args, **kwargs):
        import socket
        import threading

        self._forward("forward_local", *args, **kwargs)
        listener = socket.socket()

        def listen():
            listener.bind(("127.0.0.1", kwargs["local_port"]))
            listener.listen()

        timer = threading.Timer(self.listen_after, listen)
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            listener.close()

    @contextmanager
    def forward_remote(self, *args, **kwargs):
        self._forward("forward_remote", *args, **kwargs)
        yield


def make_host(user="root", command_timeout=120) -> tuple[LabHost, FakeConnection]:
    host = LabHost(SSHSpec("127.0.0.1", 2222, user), name="vm", command_timeout=command_timeout)
    conn = FakeConnection()
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
def test_ssh_failures_become_command_failed_and_reset_the_connection(error):
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


def test_forward_local_tunnels_a_fresh_loopback_port_to_the_remote_port():
    host, conn = make_host()
    with host.forward_local(4646) as local_port:
        assert isinstance(local_port, int)
    (kind, params), = conn.forwards
    assert kind == "forward_local"
    assert params == {"local_port": local_port, "remote_port": 4646,
                      "remote_host": "127.0.0.1", "local_host": "127.0.0.1"}


def test_forward_local_yields_only_once_the_local_port_listens():
    """A request sent right after forward_local() returned was refused: Fabric's tunnel thread
    had not bound the port yet (seen in the suite as 'Connection refused' on an agent's
    first API call)."""
    import socket

    host, conn = make_host()
    conn.listen_after = 0.3
    with host.forward_local(4646) as local_port:
        socket.create_connection(("127.0.0.1", local_port), timeout=1).close()


def test_forward_remote_exposes_the_local_port_on_a_free_remote_port():
    host, conn = make_host()
    conn.answers.append((0, "", ""))
    with host.forward_remote(8080) as remote_port:
        assert 20000 <= remote_port < 32000
    (kind, params), = conn.forwards
    assert kind == "forward_remote"
    assert params == {"remote_port": remote_port, "local_port": 8080,
                      "remote_host": "127.0.0.1", "local_host": "127.0.0.1"}
