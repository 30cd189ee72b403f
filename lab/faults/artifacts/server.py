"""The HTTP server of lab.faults.artifacts: serves registered artifacts on 127.0.0.1 and applies
their failure modes (rules.py) while recording every request (requestlog.py)."""

from __future__ import annotations

import http.server
import logging
import os
import select
import shutil
import socket
import struct
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab.faults.artifacts import content
from lab.faults.artifacts.content import (
    Artifact,
    ArtifactError,
    Unsatisfiable,
    check_name,
    parse_range,
)
from lab.faults.artifacts.requestlog import RequestLog, RequestRecord
from lab.faults.artifacts.rules import FailureModes, Rule

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like Go's client expects
    timeout = 120  # a client that stops reading must not hold a thread forever
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.owner._serve(self, head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self.server.owner._serve(self, head=True)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature from stdlib
        log.debug("artifact server: " + format, *args)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() wakes stalls itself; never hang a test's teardown
    owner: ArtifactServer

    def handle_error(self, request, client_address) -> None:
        log.exception("artifact server: error while serving %s", client_address)


class ArtifactServer:
    """Serve registered files over HTTP on 127.0.0.1, with per-artifact failure modes.

    with ArtifactServer() as srv:
        app = srv.add("app.jar", jar_path)          # Artifact(name, size, sha256)
        srv.reset("app.jar", after_bytes=4096)       # first GET dies mid-body, then normal
        with srv.expose(lab_host) as remote:
            job = ... artifact source = remote.url("app.jar"), checksum = app.checksum
        assert [r.outcome for r in srv.requests("app.jar")] == ["reset", "complete"]
    """

    def __init__(self, bind: str = "127.0.0.1"):
        self._bind = bind
        self._artifacts: dict[str, Artifact] = {}
        self._lock = threading.Lock()  # guards _artifacts
        self._modes = FailureModes()
        self._log = RequestLog()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ArtifactServer:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self._bind, 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02},
                                        name=f"artifact-server:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes stalled and throttled responses
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self._log.settle()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> ArtifactServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise ArtifactError("the artifact server is not running: use `with ArtifactServer() "
                                "as srv:` or call srv.start() first")
        return self._server.server_address[1]

    def local_url(self, name: str) -> str:
        """URL on the control host (for tests that fetch directly, not through the lab host)."""
        return f"http://127.0.0.1:{self.port}/{urllib.parse.quote(name)}"

    @contextmanager
    def expose(self, host) -> Iterator[ExposedServer]:
        """Reverse-tunnel the server into `host` (a LabHost); yields URLs valid there."""
        with host.forward_remote(self.port) as remote_port:
            yield ExposedServer(self, remote_port)

    # -- content -----------------------------------------------------------------------------
    def add(self, name: str, source: str | os.PathLike | bytes) -> Artifact:
        """Register `source` (a file, streamed from disk on each request, or bytes) as `name`."""
        return self._register(content.from_source(name, source))

    def add_large(self, name: str, size_bytes: int, base_jar: str | os.PathLike,
                  cache_dir: str | os.PathLike | None = None) -> Artifact:
        """Register a runnable JAR of at least `size_bytes`: `base_jar` plus a stored entry of
        random (incompressible) bytes. Built and served from disk, never held in memory.

        With `cache_dir`, the file (and its checksum) is kept there and reused by later runs;
        otherwise it lives in the server's temporary directory until stop().
        """
        directory = Path(cache_dir) if cache_dir is not None else self._scratch_dir()
        return self._register(content.padded(name, size_bytes, base_jar, directory))

    def alias(self, name: str, of: str) -> Artifact:
        """Register artifact `of` again as `name` (no copy, no re-hash): a test that sets
        failure modes on its own name cannot disturb others sharing the session's server."""
        check_name(name)
        return self._register(self.artifact(of).renamed(name))

    def _register(self, artifact: Artifact) -> Artifact:
        with self._lock:
            self._artifacts[artifact.name] = artifact
        return artifact

    def artifact(self, name: str) -> Artifact:
        with self._lock:
            try:
                return self._artifacts[name]
            except KeyError:
                raise ArtifactError(f"no artifact named {name!r}: registered ones are "
                                    f"{sorted(self._artifacts)}") from None

    # -- failure modes -----------------------------------------------------------------------
    def stall(self, name: str, after_bytes: int = 0, seconds: float = 3600.0,
              times: int | None = None) -> None:
        """Send headers and `after_bytes` of the body, then send nothing for `seconds` (or
        until the client gives up, recorded as client-gone), then carry on normally.
        To trip Nomad's `http_read_timeout`, make `seconds` longer than it."""
        self._modes.add(name, Rule("stall", times, after_bytes=after_bytes, seconds=seconds))

    def reset(self, name: str, after_bytes: int | None = 0, times: int | None = 1) -> None:
        """Abort the first `times` GETs with a TCP RST (SO_LINGER 0) after `after_bytes` of the
        body (None: before any response), then serve normally. The cut is always mid-body:
        `after_bytes` is clamped to size-1."""
        self._modes.add(name, Rule("reset", times, after_bytes=after_bytes))

    def status(self, name: str, code: int, times: int | None = None) -> None:
        """Answer the next `times` requests (None: all) with HTTP `code` and a short text body."""
        if not 100 <= code <= 599:
            raise ArtifactError(f"status({name!r}, {code}): not an HTTP status code")
        self._modes.add(name, Rule("status", times, code=code))

    def slow(self, name: str, bytes_per_sec: int) -> None:
        """Throttle every body of `name` to about `bytes_per_sec` (until clear())."""
        self._modes.slow(name, bytes_per_sec)

    def clear(self, name: str | None = None) -> None:
        """Drop the failure modes of `name` (or of every artifact): serve normally again."""
        self._modes.clear(name)

    # -- observation -------------------------------------------------------------------------
    def requests(self, name: str | None = None) -> list[RequestRecord]:
        """Every request for `name` (or all), oldest first; records of finished requests do
        not change any more."""
        return self._log.records(name)

    def wait_for_request(self, name: str, timeout: float, outcome: str | None = None,
                         method: str = "GET") -> RequestRecord:
        """Wait for a finished request for `name` (with `outcome`, if given) and return it."""
        return self._log.wait_for(name, timeout, outcome, method)

    def summary(self) -> str:
        """One line per request, for a failure report."""
        return self._log.summary()

    # -- serving -----------------------------------------------------------------------------
    def _serve(self, handler: _Handler, head: bool) -> None:
        path = urllib.parse.urlsplit(handler.path).path
        name = urllib.parse.unquote(path.lstrip("/"))
        record = self._log.start(name, handler.command, handler.headers.get("Range"))
        try:
            self._respond(handler, record, head)
        except (OSError, ValueError) as exc:  # peer went away (EPIPE, ECONNRESET, timeout)
            record.outcome = "client-gone"
            handler.close_connection = True
            log.debug("artifact %s: client gone after %d bytes: %s", name, record.bytes_sent,
                      exc)
        finally:
            record.finished_at = time.time()

    def _respond(self, handler: _Handler, record: RequestRecord, head: bool) -> None:
        with self._lock:
            artifact = self._artifacts.get(record.name)
        rate = self._modes.rate(record.name)
        if artifact is None:
            record.outcome = "not-found"
            _send_text(handler, record, 404, f"no artifact named {record.name!r} on the lab's "
                       "artifact server: register it with srv.add()\n")
            return
        rule = self._modes.take(record.name, consume=not head)  # HEAD never uses up a fault
        if rule is not None and rule.kind == "status":
            record.mode, record.outcome = "status", "error-status"
            _send_text(handler, record, rule.code,
                       f"lab artifact server: injected status {rule.code}\n")
            return
        if rule is not None and head and rule.kind != "status":
            rule = None  # stalls and resets act on bodies
        if rule is not None and rule.kind == "reset" and rule.after_bytes is None:
            record.mode = "reset"
            _reset_connection(handler)
            record.outcome = "reset"
            return

        try:
            span = parse_range(record.range, artifact.size)
        except Unsatisfiable:
            record.outcome = "bad-range"
            _send_text(handler, record, 416, "range not satisfiable\n",
                       {"Content-Range": f"bytes */{artifact.size}"})
            return
        start, end = span if span else (0, artifact.size - 1)
        length = end - start + 1
        record.status = 206 if span else 200
        handler.send_response(record.status)
        handler.send_header("Content-Type", "application/java-archive"
                            if record.name.endswith(".jar") else "application/octet-stream")
        handler.send_header("Content-Length", str(length))
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("ETag", f'"{artifact.sha256[:32]}"')
        if span:
            handler.send_header("Content-Range", f"bytes {start}-{end}/{artifact.size}")
        handler.end_headers()
        if head or length <= 0:
            record.outcome = "complete"
            return

        cut = None
        if rule is not None:
            record.mode = rule.kind
            cut = min(max(0, rule.after_bytes or 0), length - 1)  # always mid-body
        elif rate:
            record.mode = "slow"
        self._stream(handler, record, artifact, start, length, rule, cut, rate)

    def _stream(self, handler: _Handler, record: RequestRecord, artifact: Artifact, start: int,
                length: int, rule: Rule | None, cut: int | None, rate: int | None) -> None:
        began = time.monotonic()
        with artifact.open() as body:
            body.seek(start)
            while record.bytes_sent < length:
                if self._stopping.is_set():
                    record.outcome = "aborted"
                    handler.close_connection = True
                    return
                if cut is not None and record.bytes_sent == cut:
                    assert rule is not None
                    if rule.kind == "reset":
                        _reset_connection(handler)
                        record.outcome = "reset"
                        return
                    if not self._stall(handler, rule.seconds):
                        record.outcome = "client-gone" if not self._stopping.is_set() \
                            else "aborted"
                        handler.close_connection = True
                        return
                    cut = None
                    began = time.monotonic() - (record.bytes_sent / rate if rate else 0)
                size = min(CHUNK, length - record.bytes_sent)
                if cut is not None:
                    size = min(size, cut - record.bytes_sent)
                if rate:
                    size = min(size, max(1, rate // 20))
                data = body.read(size)
                if not data:
                    raise ArtifactError(f"artifact {record.name!r} shrank on disk while being "
                                        "served: do not rewrite registered files")
                handler.wfile.write(data)
                record.bytes_sent += len(data)
                if rate:  # pace: this is traffic shaping, not waiting for a state
                    ahead = record.bytes_sent / rate - (time.monotonic() - began)
                    if ahead > 0:
                        self._stopping.wait(ahead)
        record.outcome = "complete"

    def _stall(self, handler: _Handler, seconds: float) -> bool:
        """Send nothing for `seconds`; False as soon as the client closes (or we stop)."""
        deadline = time.monotonic() + seconds
        sock = handler.connection
        while (left := deadline - time.monotonic()) > 0:
            if self._stopping.is_set():
                return False
            readable, _, _ = select.select([sock], [], [], min(left, 0.05))
            if readable:
                try:
                    if not sock.recv(1, socket.MSG_PEEK):
                        return False  # orderly close: the client gave up
                except OSError:
                    return False
                self._stopping.wait(min(left, 0.05))  # pipelined bytes: do not spin
        return True

    def _scratch_dir(self) -> Path:
        if self._tmpdir is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="lab-artifacts-"))
        return self._tmpdir


@dataclass(frozen=True)
class ExposedServer:
    """The artifact server as seen from inside the lab host."""

    server: ArtifactServer
    port: int

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{urllib.parse.quote(name)}"


def _send_text(handler: _Handler, record: RequestRecord, code: int, text: str,
               headers: dict[str, str] | None = None) -> None:
    body = text.encode()
    record.status = code
    handler.send_response(code)
    handler.send_header("Content-Type", "text/plain; charset=utf-8")
    handler.send_header("Content-Length", str(len(body)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def _reset_connection(handler: _Handler) -> None:
    """Close with SO_LINGER 0 so the kernel sends RST instead of FIN."""
    handler.close_connection = True
    sock = handler.connection
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.rfile.close()  # the makefile() reference would otherwise keep the fd open
    sock.close()
