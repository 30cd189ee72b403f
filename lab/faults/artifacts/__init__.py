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

    content     Artifact (name, size, sha256) from a file, bytes or a padded JAR
    rules       the failure modes per artifact name (stall, reset, status, slow)
    requestlog  RequestRecord per request, waits on them
    server      ArtifactServer: the threaded HTTP server that applies them
"""

from __future__ import annotations

from lab.faults.artifacts.content import Artifact, ArtifactError, parse_range
from lab.faults.artifacts.requestlog import RequestRecord
from lab.faults.artifacts.server import CHUNK, ArtifactServer, ExposedServer
from lab.provision.badjars import PADDING_ENTRY, build_padded_jar

__all__ = ["CHUNK", "PADDING_ENTRY", "Artifact", "ArtifactError", "ArtifactServer",
           "ExposedServer", "RequestRecord", "build_padded_jar", "parse_range"]
