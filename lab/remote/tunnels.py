"""SSH port forwards that outlive a dropped connection.

Fabric's forward_local/forward_remote are bound to the transport of the moment: once the SSH
connection drops, the tunnel is dead for good, and every later API call of the test times out
without saying why. Here a local forward asks for the host's *current* transport for each new
connection (LabHost re-opens a dropped one), and a remote forward is requested again on every
new transport, on the same remote port.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable

import paramiko

STREAM_ERRORS = (OSError, EOFError, paramiko.SSHException)


def pump(a, b) -> None:
    """Copy bytes both ways between two sockets or channels until one side closes."""
    try:
        while True:
            ready, _, _ = select.select([a, b], [], [], 5.0)
            for src in ready:
                data = src.recv(65536)
                if not data:
                    return
                (b if src is a else a).sendall(data)
    except STREAM_ERRORS:
        return
    finally:
        for end in (a, b):
            try:
                end.close()
            except STREAM_ERRORS:
                pass


def start_pump(a, b) -> None:
    threading.Thread(target=pump, args=(a, b), daemon=True, name="lab-tunnel-pump").start()


class LocalForward:
    """127.0.0.1:<port> here -> a channel opened by `open_channel(origin)` for each client.

    The port is bound before the constructor returns: a request sent at once is accepted.
    A client whose channel cannot be opened (the host stayed unreachable) is closed, which
    the HTTP client sees as a refused request and retries within its own deadline.
    """

    def __init__(self, open_channel: Callable[[tuple], paramiko.Channel]):
        self._open_channel = open_channel
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.5)  # lets the accept loop see close()
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name=f"lab-tunnel-{self.port}")
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, origin = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                channel = self._open_channel(origin)
            except Exception:  # noqa: BLE001 - whatever failed, this client gets a closed socket
                client.close()
                continue
            start_pump(client, channel)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self._thread.join(timeout=5)


class RemoteForward:
    """127.0.0.1:<remote_port> on the lab host -> 127.0.0.1:<local_port> here.

    attach() is called on every new transport; the first one picks the remote port, the
    later ones ask for the same port again, so the lab host's side never changes.
    """

    def __init__(self, local_port: int):
        self.local_port = local_port
        self.remote_port = 0

    def attach(self, transport: paramiko.Transport) -> None:
        self.remote_port = transport.request_port_forward("127.0.0.1", self.remote_port,
                                                          handler=self._on_channel)

    def detach(self, transport: paramiko.Transport | None) -> None:
        if transport is not None and transport.is_active():
            try:
                transport.cancel_port_forward("127.0.0.1", self.remote_port)
            except STREAM_ERRORS:
                pass

    def _on_channel(self, channel, _origin, _server) -> None:
        # Called on paramiko's transport thread: connect and hand over, never block it long.
        try:
            local = socket.create_connection(("127.0.0.1", self.local_port), timeout=10)
        except OSError:
            channel.close()
            return
        start_pump(local, channel)
