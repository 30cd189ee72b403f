"""The artifact server on loopback, fetched with requests: content, HEAD/Range, failure modes."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
import tracemalloc
import zipfile
from contextlib import contextmanager

import pytest
import requests

from lab.core.wait import until
from lab.faults.artifacts import (
    PADDING_ENTRY,
    ArtifactError,
    ArtifactServer,
    build_padded_jar,
    parse_range,
)

BODY = bytes(range(256)) * 64  # 16 KiB, every offset recognisable


@pytest.fixture
def srv():
    with ArtifactServer() as server:
        server.add("app.jar", BODY)
        yield server


def settled(srv, name):
    """The requests for `name` once the server has finished recording them: the client can
    have the whole body before the server thread sets the outcome."""
    until(lambda: srv.requests(name) and all(r.done for r in srv.requests(name)), 5,
          f"requests for {name} to finish")
    return srv.requests(name)


def fetch(srv, name="app.jar", **kwargs):
    with requests.Session() as session:  # own connection per call: no keep-alive surprises
        return session.get(srv.local_url(name), timeout=kwargs.pop("timeout", 5), **kwargs)


def test_serves_registered_bytes_with_length_and_checksum(srv):
    resp = fetch(srv)
    assert resp.status_code == 200
    assert resp.content == BODY
    assert resp.headers["Content-Length"] == str(len(BODY))
    assert resp.headers["Accept-Ranges"] == "bytes"
    art = srv.artifact("app.jar")
    assert art.sha256 == hashlib.sha256(resp.content).hexdigest()
    assert art.checksum == "sha256:" + art.sha256
    (rec,) = settled(srv, "app.jar")
    assert (rec.method, rec.status, rec.outcome, rec.bytes_sent) == ("GET", 200, "complete",
                                                                     len(BODY))


def test_serves_files_from_disk_and_ignores_query_strings(srv, tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 100_000)
    art = srv.add("dir/data.bin", path)
    resp = fetch(srv, "dir/data.bin", params={"checksum": "sha256:" + art.sha256})
    assert resp.content == path.read_bytes()
    assert art.size == 100_000


def test_an_alias_has_its_own_failure_modes(srv):
    alias = srv.alias("mine.jar", of="app.jar")
    assert (alias.size, alias.sha256) == (len(BODY), srv.artifact("app.jar").sha256)
    srv.status("mine.jar", 500)
    assert fetch(srv, "mine.jar").status_code == 500
    assert fetch(srv, "app.jar").content == BODY


def test_unknown_artifact_is_404_naming_it(srv):
    resp = fetch(srv, "nope.jar")
    assert resp.status_code == 404
    assert "nope.jar" in resp.text
    assert settled(srv, "nope.jar")[0].outcome == "not-found"


def test_head_reports_size_without_body_and_does_not_use_up_a_fault(srv):
    srv.reset("app.jar", after_bytes=10, times=1)
    resp = requests.head(srv.local_url("app.jar"), timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Content-Length"] == str(len(BODY))
    assert resp.content == b""
    with pytest.raises(requests.exceptions.RequestException):
        fetch(srv)  # the reset is still armed for the first GET


@pytest.mark.parametrize("header,status,span", [
    ("bytes=10-19", 206, (10, 19)),
    ("bytes=16000-", 206, (16000, len(BODY) - 1)),
    ("bytes=-5", 206, (len(BODY) - 5, len(BODY) - 1)),
    ("bytes=100-99999999", 206, (100, len(BODY) - 1)),
    ("bytes=0-1,5-6", 200, None),  # multi-range: whole body, as RFC 9110 allows
    ("chunks=1-2", 200, None),
])
def test_range_requests(srv, header, status, span):
    resp = fetch(srv, headers={"Range": header})
    assert resp.status_code == status
    if span is None:
        assert resp.content == BODY
    else:
        start, end = span
        assert resp.content == BODY[start:end + 1]
        assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{len(BODY)}"


def test_range_past_the_end_is_416(srv):
    resp = fetch(srv, headers={"Range": f"bytes={len(BODY)}-"})
    assert resp.status_code == 416
    assert resp.headers["Content-Range"] == f"bytes */{len(BODY)}"


def test_parse_range_edge_cases():
    assert parse_range(None, 10) is None
    assert parse_range("bytes=abc-", 10) is None
    assert parse_range("bytes=5-2", 10) is None
    assert parse_range("bytes=-100", 10) == (0, 9)


def test_status_for_some_requests_then_normal(srv):
    srv.status("app.jar", 500, times=2)
    codes = [fetch(srv).status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    assert [r.outcome for r in settled(srv, "app.jar")] == ["error-status", "error-status",
                                                             "complete"]


def test_status_forever_until_cleared(srv):
    srv.status("app.jar", 404)
    assert fetch(srv).status_code == 404
    assert fetch(srv).status_code == 404
    srv.clear("app.jar")
    assert fetch(srv).status_code == 200


def test_reset_mid_body_then_success(srv):
    srv.reset("app.jar", after_bytes=1000, times=1)
    with pytest.raises((requests.exceptions.ConnectionError,
                        requests.exceptions.ChunkedEncodingError)):
        fetch(srv)
    resp = fetch(srv)
    assert resp.content == BODY
    first, second = settled(srv, "app.jar")
    assert (first.outcome, first.mode, first.bytes_sent) == ("reset", "reset", 1000)
    assert (second.outcome, second.mode) == ("complete", None)


def test_reset_before_any_response_is_a_connection_error(srv):
    srv.reset("app.jar", after_bytes=None, times=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        fetch(srv)
    assert fetch(srv).status_code == 200


def test_reset_point_is_clamped_inside_the_body(srv):
    srv.reset("app.jar", after_bytes=10**9, times=1)
    with pytest.raises(requests.exceptions.RequestException):
        fetch(srv)
    assert settled(srv, "app.jar")[0].bytes_sent == len(BODY) - 1


def test_stall_trips_the_client_read_timeout_and_is_seen_as_client_gone(srv):
    srv.stall("app.jar", after_bytes=100, seconds=30, times=1)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ConnectionError):
        fetch(srv, timeout=0.3)
    assert time.monotonic() - started < 5
    rec = srv.wait_for_request("app.jar", timeout=3, outcome="client-gone")
    assert (rec.mode, rec.bytes_sent, rec.status) == ("stall", 100, 200)
    assert fetch(srv).content == BODY  # times=1: the next one is normal


def test_short_stall_then_completes(srv):
    srv.stall("app.jar", after_bytes=0, seconds=0.3, times=1)
    started = time.monotonic()
    resp = fetch(srv)
    assert resp.content == BODY
    assert time.monotonic() - started >= 0.3
    assert settled(srv, "app.jar")[0].outcome == "complete"


def test_slow_throttles_the_body(srv):
    srv.slow("app.jar", bytes_per_sec=40_000)  # 16 KiB at 40 kB/s: ~0.4 s
    started = time.monotonic()
    assert fetch(srv).content == BODY
    elapsed = time.monotonic() - started
    assert 0.3 < elapsed < 2, elapsed
    assert settled(srv, "app.jar")[0].mode == "slow"


def test_stop_wakes_a_stalled_response():
    server = ArtifactServer().start()
    server.add("a", b"x" * 1000)
    server.stall("a", after_bytes=10, seconds=60)
    with requests.get(server.local_url("a"), stream=True, timeout=5) as resp:
        assert resp.raw.read(10) == b"x" * 10
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2
    assert server.requests("a")[0].outcome in ("aborted", "client-gone")


def test_misuse_is_named():
    server = ArtifactServer()
    with pytest.raises(ArtifactError, match="not running"):
        server.port  # noqa: B018
    with pytest.raises(ArtifactError, match="relative URL path"):
        server.add("../etc/passwd", b"")
    with pytest.raises(ArtifactError, match="not a file"):
        server.add("x.jar", "/nonexistent/x.jar")
    with pytest.raises(ArtifactError, match="times"):
        server.reset("x.jar", times=0)


def test_wait_for_request_times_out_naming_what_it_saw(srv):
    srv.status("app.jar", 503)
    fetch(srv)
    with pytest.raises(Exception, match="error-status"):
        srv.wait_for_request("app.jar", timeout=0.3, outcome="complete")


class FakeTunnelHost:
    def __init__(self):
        self.forwarded = []

    @contextmanager
    def forward_remote(self, local_port):
        self.forwarded.append(local_port)
        yield 24680


def test_expose_tunnels_the_server_port_and_builds_lab_side_urls(srv):
    host = FakeTunnelHost()
    with srv.expose(host) as remote:
        assert remote.url("dir/app one.jar") == "http://127.0.0.1:24680/dir/app%20one.jar"
    assert host.forwarded == [srv.port]


# -- large artifacts ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hello_jar(tmp_path_factory):
    if not shutil.which("javac"):
        pytest.skip("javac not on PATH: cannot build a base jar")
    work = tmp_path_factory.mktemp("hello")
    (work / "H.java").write_text(
        'public class H { public static void main(String[] a) '
        '{ System.out.println("hello from padded jar"); } }')
    subprocess.run(["javac", "H.java"], cwd=work, check=True)
    jar = work / "hello.jar"
    with zipfile.ZipFile(jar, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\nMain-Class: H\r\n\r\n")
        zf.write(work / "H.class", "H.class")
    return jar


def test_padded_jar_is_big_valid_and_still_runs(hello_jar, tmp_path):
    size = 8 * 1024 * 1024
    out = build_padded_jar(hello_jar, size, tmp_path / "big.jar")
    assert out.stat().st_size >= size
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist()[0] == "META-INF/MANIFEST.MF"
        assert zf.getinfo(PADDING_ENTRY).compress_type == zipfile.ZIP_STORED
        assert zf.testzip() is None
    if shutil.which("java"):
        run = subprocess.run(["java", "-jar", str(out)], capture_output=True, text=True,
                             timeout=30)
        assert run.stdout.strip() == "hello from padded jar", run.stderr


def test_large_artifact_is_built_and_served_without_loading_it_into_memory(hello_jar,
                                                                           tmp_path):
    size = 24 * 1024 * 1024
    tracemalloc.start()
    try:
        with ArtifactServer() as server:
            art = server.add_large("big.jar", size, base_jar=hello_jar, cache_dir=tmp_path)
            digest = hashlib.sha256()
            with requests.get(server.local_url("big.jar"), stream=True, timeout=10) as resp:
                for chunk in resp.iter_content(64 * 1024):
                    digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert art.size >= size
    assert digest.hexdigest() == art.sha256
    assert peak < 6 * 1024 * 1024, f"peak traced memory {peak} bytes: something buffered"
    # the cache is reused: same file, same checksum, no rebuild
    with ArtifactServer() as server:
        again = server.add_large("big.jar", size, base_jar=hello_jar, cache_dir=tmp_path)
    assert (again.path, again.sha256) == (art.path, art.sha256)
