"""Deliberately broken JARs for the failure tests, and a padded JAR for the large-artifact test.

All content is deterministic (fixed seeds and timestamps), so a rebuild produces the same bytes
and the same checksums.
"""

from __future__ import annotations

import io
import os
import random
import zipfile
from pathlib import Path

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
BAD_JARS = ("random", "truncated", "nomain", "empty", "badclass")
BAD_CLASS_MAIN = "lab.apps.badclass.Main"  # the Main-Class of badclass.jar, whose bytes are garbage
PADDING_ENTRY = "lab-padding/random.bin"  # the filler entry of a padded JAR


def random_bytes(size: int = 64 * 1024, seed: int = 4242) -> bytes:
    """Not a zip at all."""
    return random.Random(seed).randbytes(size)


def no_main_class() -> bytes:
    """A valid zip with a manifest and a class-like entry, but no Main-Class."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as jar:
        _add(jar, "META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\r\nCreated-By: lab\r\n\r\n")
        _add(jar, "lab/apps/nomain/NoMain.class", b"\xca\xfe\xba\xbe" + bytes(60))
    return buffer.getvalue()


def corrupt_main_class() -> bytes:
    """A valid zip and a valid manifest naming its Main-Class, whose class file is garbage
    (no 0xCAFEBABE magic): only the JVM, loading the class, can tell (ClassFormatError)."""
    entry = BAD_CLASS_MAIN.replace(".", "/") + ".class"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as jar:
        _add(jar, "META-INF/MANIFEST.MF",
             f"Manifest-Version: 1.0\r\nMain-Class: {BAD_CLASS_MAIN}\r\n\r\n".encode())
        _add(jar, entry, b"NOT A CLASS FILE " + random_bytes(1024, seed=99))
    return buffer.getvalue()


def runnable_stand_in() -> bytes:
    """A zip shaped like a runnable JAR (manifest with Main-Class, some entries), used to
    make the truncated JAR when no real one is at hand."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as jar:
        _add(jar, "META-INF/MANIFEST.MF",
             b"Manifest-Version: 1.0\r\nMain-Class: lab.apps.hello.Hello\r\n\r\n")
        _add(jar, "lab/apps/hello/Hello.class", random_bytes(8 * 1024, seed=7))
    return buffer.getvalue()


def truncated(jar: bytes) -> bytes:
    """A real JAR cut in half: local headers intact, central directory gone."""
    return jar[: len(jar) // 2]


def bad_jar_bytes(real_jar: bytes | None = None) -> dict[str, bytes]:
    return {
        "random": random_bytes(),
        "truncated": truncated(real_jar or runnable_stand_in()),
        "nomain": no_main_class(),
        "empty": b"",
        "badclass": corrupt_main_class(),
    }


def write_bad_jars(bad_dir: Path, real_jar: Path | None = None) -> dict[str, Path]:
    """Write <name>.jar for each of BAD_JARS into bad_dir; files already right are untouched."""
    bad_dir.mkdir(parents=True, exist_ok=True)
    source = real_jar.read_bytes() if real_jar is not None and real_jar.exists() else None
    paths = {}
    for name, data in bad_jar_bytes(source).items():
        path = bad_dir / f"{name}.jar"
        if not (path.exists() and path.read_bytes() == data):
            _write_atomically(path, data)
        paths[name] = path
    return paths


def build_padded_jar(base_jar: Path, size_bytes: int, out: Path, seed: int = 1) -> Path:
    """Write `out`: every entry of `base_jar` (manifest first, as copied; an earlier padding
    dropped) plus one stored entry of seeded random bytes, so `out` is at least `size_bytes`.
    Random bytes defeat compression anywhere on the path; the JVM ignores an entry no class
    refers to, so the JAR still runs like base_jar. Written in 1 MiB chunks, never held in
    memory."""
    pad = max(0, size_bytes - base_jar.stat().st_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    rng = random.Random(seed)
    with zipfile.ZipFile(base_jar) as source, zipfile.ZipFile(partial, "w") as jar:
        for info in source.infolist():
            if info.filename != PADDING_ENTRY:
                jar.writestr(info, source.read(info))
        padding = zipfile.ZipInfo(PADDING_ENTRY, date_time=ZIP_EPOCH)
        padding.compress_type = zipfile.ZIP_STORED
        with jar.open(padding, "w", force_zip64=pad >= zipfile.ZIP64_LIMIT) as blob:
            remaining = pad
            while remaining > 0:
                chunk = min(remaining, 1 << 20)
                blob.write(rng.randbytes(chunk))
                remaining -= chunk
    os.replace(partial, out)
    return out


def padded_jar(base_jar: Path, dest: Path, size_mb: int, seed: int = 1) -> Path:
    """build_padded_jar of at least size_mb MiB at dest, reused when it already has that size
    and is newer than base_jar (the large-artifact tests)."""
    target = size_mb << 20
    if dest.exists() and dest.stat().st_size >= target and dest.stat().st_mtime >= \
            base_jar.stat().st_mtime:
        return dest
    return build_padded_jar(base_jar, target, dest, seed)


def _add(jar: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    jar.writestr(info, data)


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
