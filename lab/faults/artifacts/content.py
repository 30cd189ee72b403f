"""What the artifact server serves: registered files or bytes with their size and sha256, and
the span of one that a Range header asks for."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from lab.core.errors import LabError
from lab.provision.badjars import build_padded_jar


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

    def renamed(self, name: str) -> Artifact:
        """The same content under another name (no copy, no re-hash)."""
        return Artifact(name, self.size, self.sha256, path=self.path, data=self.data)


def from_source(name: str, source: str | os.PathLike | bytes) -> Artifact:
    """`source` (a file, streamed from disk on each request, or bytes) as artifact `name`."""
    check_name(name)
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
        return Artifact(name, len(data), hashlib.sha256(data).hexdigest(), data=data)
    path = Path(source)
    if not path.is_file():
        raise ArtifactError(f"artifact {name!r}: {path} is not a file; build it first "
                            "(e.g. `invoke plugin.build` / the test-jar fixture)")
    return Artifact(name, path.stat().st_size, sha256_file(path), path=path)


def padded(name: str, size_bytes: int, base_jar: str | os.PathLike, directory: Path) -> Artifact:
    """A runnable JAR of at least `size_bytes` in `directory` (lab.provision.badjars'
    build_padded_jar), reused with its checksum when a previous run built it there."""
    base = Path(base_jar)
    if not base.is_file():
        raise ArtifactError(f"add_large {name!r}: base jar {base} does not exist; build the "
                            "test jars first")
    directory.mkdir(parents=True, exist_ok=True)
    base_sha = sha256_file(base)
    out = directory / f"{base.stem}-padded-{size_bytes}-{base_sha[:12]}.jar"
    sidecar = out.with_name(out.name + ".sha256")
    if out.is_file() and sidecar.is_file() and out.stat().st_size >= size_bytes:
        return Artifact(name, out.stat().st_size, sidecar.read_text().strip(), path=out)
    build_padded_jar(base, size_bytes, out)
    artifact = Artifact(name, out.stat().st_size, sha256_file(out), path=out)
    sidecar.write_text(artifact.sha256 + "\n")
    return artifact


def check_name(name: str) -> None:
    if not name or name.startswith("/") or ".." in name.split("/") or "?" in name:
        raise ArtifactError(f"artifact name {name!r} must be a relative URL path without "
                            "'..' or '?', e.g. 'apps/hello.jar'")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Unsatisfiable(Exception):
    """The Range asks for bytes past the end (416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte span of a single `bytes=` range, or None to serve the whole body.

    Malformed and multi-range headers are ignored (RFC 9110 allows serving 200 instead);
    a range that starts past the end raises Unsatisfiable (416).
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
                raise Unsatisfiable
            return max(0, size - count), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        raise Unsatisfiable
    if end < start:
        return None
    return start, min(end, size - 1)
