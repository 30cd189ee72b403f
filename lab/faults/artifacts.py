"""An HTTP artifact server for Nomad `artifact` blocks, with failure modes set per artifact.

The server runs inside pytest on the control host (127.0.0.1, ephemeral port). `expose(host)`
opens an SSH reverse tunnel and yields URLs that are valid inside the lab host, which is where
Nomad's artifact downloader runs.

What that downloader does (go-getter v1.8.4's HttpGetter as configured by Nomad v1.11.3's
client/allocrunner/taskrunner/getter/params.go), because the failure modes are shaped by it:
- one plain GET per download: Nomad sets `DoNotCheckHeadFirst`, so no HEAD and no Range resume;
- `http_read_timeout` is a deadline on the whole GET (a context timeout), not an idle timeout:
  a stall longer than it fails with "context deadline exceeded";
- `http_max_size` wraps the body in a LimitReader: a body larger than it comes out shorter than
  Content-Length and fails with "short write", so every response here carries Content-Length;
- Nomad never retries a download itself; the task's restart policy does ("Failed Artifact
  Download" is recoverable). `reset(..., times=1)` plus a restart therefore proves recovery.
HEAD and single-range requests are still served properly for other clients (curl, requests,
go-getter with its defaults). Query strings (go-getter's `checksum=`, `archive=`) are ignored.

Through the SSH reverse tunnel an injected TCP RST reaches the lab host as an early close of
the tunnelled connection (the client sees an unexpected EOF), since SSH carries streams, not
packets. For a real RST inside the lab host use `lab.faults.connection_resets`.
"""

from __future__ import annotations

import hashlib
import http.server
import io
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
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from lab.core.errors import LabError, LabTimeout
from lab.core.wait import Pending, until

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
PADDING_ENTRY = "lab-padding/random.bin"


class ArtifactError(LabError):
    """The artifact server was misused or could not serve (names the artifact and the fix)."""


@dataclass(frozen=True)
class Artifact:
    name: str
    size: int
    sha256: str
    path: Path | None = field(default=None, repr=False, compare=False)
    data: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def checksum(self) -> str:
        """The value for a job's `artifact { options { checksum = ... } }`."""
        return f"sha256:{self.sha256}"

    def open(self) -> BinaryIO:
        return self.path.open("rb") if self.path is not None else io.BytesIO(self.data or b"")


@dataclass
class RequestRecord:
    """One request as the server saw it; `outcome` is set when the response ends.

    outcome: in-progress, complete, reset (RST sent), client-gone (the client closed or the
    write failed: e.g. it timed out), error-status (an injected status), not-found,
    bad-range (416), aborted (the server stopped mid-response).
    mode: the failure mode that applied (stall, reset, status), "slow" if only throttled,
    else None.
    """

    name: str
    method: str
    range: str | None
    started_at: float
    status: int = 0
    mode: str | None = None
    bytes_sent: int = 0
    outcome: str = "in-progress"
    finished_at: float | None = None

    @property
    def done(self) -> bool:
        return self.outcome != "in-progress"

    def __str__(self) -> str:
        took = f"{self.finished_at - self.started_at:.2f}s" if self.finished_at else "running"
        rng = f" range={self.range}" if self.range else ""
        mode = f" mode={self.mode}" if self.mode else ""
        return (f"{self.method} {self.name}{rng} -> {self.status or '-'} {self.outcome}{mode} "
                f"sent={self.bytes_sent} ({took})")


@dataclass
class _Rule:
    kind: str  # stall | reset | status
    remaining: int | None  # None: every request
    after_bytes: int | None = 0
    seconds: float = 0.0
    code: int = 0


class _Unsatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte span of a single `bytes=` range, or None to serve the whole body.

    Malformed and multi-range headers are ignored (RFC 9110 allows serving 200 instead);
    a range that starts past the end raises _Unsatisfiable (416).
    """
    if not header or not header.strip().startswith("bytes=") or "," in header:
        return None
    spec = header.strip()[len("bytes="):].strip()
    first, sep, last = spec.partition("-")
    if not sep:
        return None
    try:
        if first == "":  # suffix: the last N bytes
            count = int(last)
            if count <= 0 or size == 0:
                raise _Unsatisfiable
            return max(0, size - count), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        raise _Unsatisfiable
    if end < start:
        return None
    return start, min(end, size - 1)


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
        self._rules: dict[str, list[_Rule]] = {}
        self._rates: dict[str, int] = {}
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()
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
            self._settle()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _settle(self, timeout: float = 2.0) -> None:
        """Let woken responses record how they ended; one stuck writing to a client that no
        longer reads is marked aborted rather than holding up teardown."""
        def settled():
            running = [str(r) for r in self.requests() if not r.done]
            return Pending(running) if running else True
        try:
            until(settled, timeout, "in-flight artifact responses to end", interval=0.01)
        except LabTimeout:
            for record in self.requests():
                if not record.done:
                    record.outcome = "aborted"

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
        _check_name(name)
        if isinstance(source, bytes | bytearray):
            data = bytes(source)
            artifact = Artifact(name, len(data), hashlib.sha256(data).hexdigest(), data=data)
        else:
            path = Path(source)
            if not path.is_file():
                raise ArtifactError(f"artifact {name!r}: {path} is not a file; build it first "
                                    "(e.g. `invoke plugin.build` / the test-jar fixture)")
            artifact = Artifact(name, path.stat().st_size, _sha256_file(path), path=path)
        with self._lock:
            self._artifacts[name] = artifact
        return artifact

    def add_large(self, name: str, size_bytes: int, base_jar: str | os.PathLike,
                  cache_dir: str | os.PathLike | None = None) -> Artifact:
        """Register a runnable JAR of at least `size_bytes`: `base_jar` plus a stored entry of
        random (incompressible) bytes. Built and served from disk, never held in memory.

        With `cache_dir`, the file (and its checksum) is kept there and reused by later runs;
        otherwise it lives in the server's temporary directory until stop().
        """
        base = Path(base_jar)
        if not base.is_file():
            raise ArtifactError(f"add_large {name!r}: base jar {base} does not exist; build the "
                                "test jars first")
        if cache_dir is not None:
            directory = Path(cache_dir)
            directory.mkdir(parents=True, exist_ok=True)
        else:
            directory = self._scratch_dir()
        base_sha = _sha256_file(base)
        out = directory / f"{base.stem}-padded-{size_bytes}-{base_sha[:12]}.jar"
        sidecar = out.with_name(out.name + ".sha256")
        if out.is_file() and sidecar.is_file() and out.stat().st_size >= size_bytes:
            sha = sidecar.read_text().strip()
            artifact = Artifact(name, out.stat().st_size, sha, path=out)
        else:
            build_padded_jar(base, size_bytes, out)
            artifact = Artifact(name, out.stat().st_size, _sha256_file(out), path=out)
            sidecar.write_text(artifact.sha256 + "\n")
        with self._lock:
            self._artifacts[name] = artifact
        return artifact

    def alias(self, name: str, of: str) -> Artifact:
        """Register artifact `of` again as `name` (no copy, no re-hash): a test that sets
        failure modes on its own name cannot disturb others sharing the session's server."""
        _check_name(name)
        source = self.artifact(of)
        artifact = Artifact(name, source.size, source.sha256, path=source.path,
                            data=source.data)
        with self._lock:
            self._artifacts[name] = artifact
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
        self._add_rule(name, _Rule("stall", times, after_bytes=after_bytes, seconds=seconds))

    def reset(self, name: str, after_bytes: int | None = 0, times: int | None = 1) -> None:
        """Abort the first `times` GETs with a TCP RST (SO_LINGER 0) after `after_bytes` of the
        body (None: before any response), then serve normally. The cut is always mid-body:
        `after_bytes` is clamped to size-1."""
        self._add_rule(name, _Rule("reset", times, after_bytes=after_bytes))

    def status(self, name: str, code: int, times: int | None = None) -> None:
        """Answer the next `times` requests (None: all) with HTTP `code` and a short text body."""
        if not 100 <= code <= 599:
            raise ArtifactError(f"status({name!r}, {code}): not an HTTP status code")
        self._add_rule(name, _Rule("status", times, code=code))

    def slow(self, name: str, bytes_per_sec: int) -> None:
        """Throttle every body of `name` to about `bytes_per_sec` (until clear())."""
        if bytes_per_sec <= 0:
            raise ArtifactError(f"slow({name!r}, {bytes_per_sec}): the rate must be positive")
        with self._lock:
            self._rates[name] = int(bytes_per_sec)

    def clear(self, name: str | None = None) -> None:
        """Drop the failure modes of `name` (or of every artifact): serve normally again."""
        with self._lock:
            for table in (self._rules, self._rates):
                if name is None:
                    table.clear()
                else:
                    table.pop(name, None)

    def _add_rule(self, name: str, rule: _Rule) -> None:
        _check_name(name)
        if rule.remaining is not None and rule.remaining < 1:
            raise ArtifactError(f"{rule.kind}({name!r}): times must be >= 1 or None (always)")
        with self._lock:
            self._rules.setdefault(name, []).append(rule)

    def _take_rule(self, name: str, consume: bool) -> _Rule | None:
        """The first rule still active for `name`, counted down when `consume`."""
        with self._lock:
            rules = self._rules.get(name, [])
            for rule in rules:
                if rule.remaining is None or rule.remaining > 0:
                    if consume and rule.remaining is not None:
                        rule.remaining -= 1
                    return rule
            return None

    # -- observation -------------------------------------------------------------------------
    def requests(self, name: str | None = None) -> list[RequestRecord]:
        """Every request for `name` (or all), oldest first; records of finished requests do
        not change any more."""
        with self._lock:
            return [r for r in self._records if name is None or r.name == name]

    def wait_for_request(self, name: str, timeout: float, outcome: str | None = None,
                         method: str = "GET") -> RequestRecord:
        """Wait for a finished request for `name` (with `outcome`, if given) and return it."""
        def check():
            seen = [r for r in self.requests(name) if r.method == method]
            for record in seen:
                if record.done and (outcome is None or record.outcome == outcome):
                    return record
            return Pending([str(r) for r in seen] or "no request yet")
        return until(check, timeout,
                     f"a {method} of artifact {name!r}" + (f" ending {outcome}" if outcome else ""))

    def summary(self) -> str:
        """One line per request, for a failure report."""
        return "\n".join(str(r) for r in self.requests()) or "(no requests)"

    # -- serving -----------------------------------------------------------------------------
    def _serve(self, handler: _Handler, head: bool) -> None:
        path = urllib.parse.urlsplit(handler.path).path
        name = urllib.parse.unquote(path.lstrip("/"))
        record = RequestRecord(name, handler.command, handler.headers.get("Range"), time.time())
        with self._lock:
            self._records.append(record)
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
            rate = self._rates.get(record.name)
        if artifact is None:
            record.outcome = "not-found"
            _send_text(handler, record, 404, f"no artifact named {record.name!r} on the lab's "
                       "artifact server: register it with srv.add()\n")
            return
        rule = self._take_rule(record.name, consume=not head)  # HEAD never uses up a fault
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
        except _Unsatisfiable:
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
                length: int, rule: _Rule | None, cut: int | None, rate: int | None) -> None:
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


def build_padded_jar(base_jar: Path, size_bytes: int, out: Path) -> Path:
    """Write `out`: every entry of `base_jar` (manifest first, as copied) plus one stored entry
    of random bytes so the file is >= `size_bytes`. Random data defeats compression anywhere
    on the path; the JVM ignores an entry no class refers to, so the JAR still runs."""
    pad = max(0, size_bytes - base_jar.stat().st_size)
    partial = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(base_jar) as src, zipfile.ZipFile(partial, "w") as dst:
        for info in src.infolist():
            if info.filename == PADDING_ENTRY:
                continue
            dst.writestr(info, src.read(info))
        entry = zipfile.ZipInfo(PADDING_ENTRY, date_time=(2020, 1, 1, 0, 0, 0))
        entry.compress_type = zipfile.ZIP_STORED
        with dst.open(entry, "w", force_zip64=pad >= zipfile.ZIP64_LIMIT) as sink:
            left = pad
            while left:
                chunk = os.urandom(min(1 << 20, left))
                sink.write(chunk)
                left -= len(chunk)
    os.replace(partial, out)
    return out


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


def _check_name(name: str) -> None:
    if not name or name.startswith("/") or ".." in name.split("/") or "?" in name:
        raise ArtifactError(f"artifact name {name!r} must be a relative URL path without "
                            "'..' or '?', e.g. 'apps/hello.jar'")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
