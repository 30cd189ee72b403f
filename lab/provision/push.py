"""Push the builds to the lab host over SSH, only what changed (by sha256)."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path

from lab.core.config import LabConfig
from lab.core.errors import LabError
from lab.remote.host import LabHost
from lab.remote.layout import (
    JAR_DIR,
    MANIFEST,
    NOMAD_BIN,
    PLUGIN_BINARY,
    PLUGIN_DIR,
    SHIM_PATH,
    SHIM_RELPATH,
)


def manifest(config: LabConfig) -> dict[str, tuple[Path, str]]:
    """remote path -> (local file, mode) for everything the lab host needs."""
    build = config.build_dir
    files = {NOMAD_BIN: (build / "nomad", "0755"),
             f"{PLUGIN_DIR}/{PLUGIN_BINARY}": (build / PLUGIN_BINARY, "0755"),
             SHIM_PATH: (build / SHIM_RELPATH, "0755")}
    for jar in sorted((build / "jars").glob("*.jar")):
        files[f"{JAR_DIR}/{jar.name}"] = (jar, "0644")
    missing = [str(local) for local, _ in files.values() if not local.exists()]
    if missing:
        raise LabError(f"nothing to push for {missing}: build first with `./invoke plugin.build`")
    return files


def remote_paths(config: LabConfig) -> list[str]:
    return list(manifest(config))


SUMS_CACHE = ".sha256.json"  # beside the files it vouches for: {name: [size, mtime_ns, sha256]}


def sha256(path: Path) -> str:
    """The file's sha256, recorded beside it and read again only when its size or mtime
    changed (the 144 MB Nomad binary takes ~0.2 s to hash, on every lab.up and test run)."""
    stat = path.stat()
    cache_file = path.parent / SUMS_CACHE
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    size, mtime_ns, digest = (cache.get(path.name) or [None, None, None])
    if (size, mtime_ns) == (stat.st_size, stat.st_mtime_ns) and digest:
        return digest
    hasher = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(block)
    cache[path.name] = [stat.st_size, stat.st_mtime_ns, hasher.hexdigest()]
    try:  # atomically: parallel test runs hash the same files
        tmp = cache_file.with_name(f"{SUMS_CACHE}.{os.getpid()}")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
        tmp.replace(cache_file)
    except OSError:
        pass  # a read-only build dir: hash again next time
    return cache[path.name][2]


def remote_sums(host: LabHost, paths: list[str]) -> dict[str, str]:
    """sha256 of each path present on the lab host (see _remote_sums)."""
    return _remote_sums(host, paths)[0]


def _remote_sums(host: LabHost, paths: list[str]) -> tuple[dict[str, str], list[str]]:
    """sha256 of each path present on the lab host, in one round trip when nothing changed,
    and the paths the manifest could not vouch for.

    Push records each file's sha256 with its size and mtime in MANIFEST; a file whose size and
    mtime still match is vouched for by it (hashing the 144 MB Nomad binary under TCG takes
    seconds). Only files the manifest cannot vouch for are hashed on the lab host.
    """
    return hash_unvouched(host, *parse_sums(host.sudo(sums_command(paths), check=False).stdout))


def sums_command(paths: list[str]) -> str:
    """The manifest and each path's size and mtime (_remote_sums's one round trip)."""
    quoted = " ".join(shlex.quote(p) for p in paths)
    return (f"cat {MANIFEST} 2>/dev/null; echo; echo '--- stat'; "
            f"stat -c '%s %Y %n' {quoted} 2>/dev/null; true")


def parse_sums(out: str) -> tuple[dict[str, str], list[str]]:
    """sums_command's output -> (sha256 of each file the manifest vouches for, the present
    files it cannot vouch for)."""
    recorded_text, _, stat_text = out.partition("--- stat")
    try:
        recorded = json.loads(recorded_text.strip() or "{}")
    except ValueError:
        recorded = {}
    present = {}
    for line in stat_text.strip().splitlines():
        size, mtime, path = line.split(" ", 2)
        present[path] = (int(size), int(mtime))
    sums, unknown = {}, []
    for path, stat in present.items():
        entry = recorded.get(path) or {}
        if (entry.get("size"), entry.get("mtime")) == stat and entry.get("sha256"):
            sums[path] = entry["sha256"]
        else:
            unknown.append(path)
    return sums, unknown


def hash_unvouched(host: LabHost, sums: dict[str, str],
                   unknown: list[str]) -> tuple[dict[str, str], list[str]]:
    """Hash on the lab host the files the manifest could not vouch for (none: no round trip)."""
    sums = dict(sums)
    if unknown:
        quoted = " ".join(shlex.quote(p) for p in unknown)
        out = host.sudo(f"sha256sum {quoted} 2>/dev/null; true", check=False).stdout
        sums.update({path: digest for digest, path in
                     (line.split(maxsplit=1) for line in out.splitlines() if line.strip())})
    return sums, unknown


def record(host: LabHost, sums: dict[str, str]) -> None:
    """Write MANIFEST for `sums` ({remote path: sha256}) as the files are now."""
    quoted = " ".join(shlex.quote(p) for p in sums)
    out = host.sudo(f"stat -c '%s %Y %n' {quoted}", check=False).stdout
    entries = {}
    for line in out.strip().splitlines():
        size, mtime, path = line.split(" ", 2)
        if path in sums:
            entries[path] = {"sha256": sums[path], "size": int(size), "mtime": int(mtime)}
    host.write_file(MANIFEST, json.dumps(entries, indent=1, sort_keys=True) + "\n")


NOT_ON_HOST = "is not on the lab host"  # a stale() line of a file the lab host lacks


def stale(host: LabHost, config: LabConfig,
          read: tuple[dict[str, str], list[str]] | None = None) -> list[str]:
    """What differs between this tree's build and the lab host: one line per file. `read`:
    parse_sums() of sums_command(remote_paths(config)), when the caller ran it already."""
    files = manifest(config)
    have = (hash_unvouched(host, *read)[0] if read is not None
            else remote_sums(host, list(files)))
    where = {True: f"{NOT_ON_HOST}; build:", False: "differs from"}
    return [f"{remote} {where[remote not in have]} {local}"
            for remote, (local, _) in files.items()
            if have.get(remote) != sha256(local)]


def push(host: LabHost, config: LabConfig, out=print,
         read: tuple[dict[str, str], list[str]] | None = None) -> list[str]:
    """Upload changed files; return the remote paths that were updated. `read` is
    parse_sums() of sums_command(remote_paths(config)) when the caller ran it already."""
    files = manifest(config)
    have, unvouched = (hash_unvouched(host, *read) if read is not None
                       else _remote_sums(host, list(files)))
    want = {remote: sha256(local) for remote, (local, _) in files.items()}
    changed = [remote for remote in files if have.get(remote) != want[remote]]
    for remote in changed:
        local, mode = files[remote]
        out(f"push: {local.name} -> {remote} ({local.stat().st_size / 1e6:.1f} MB)")
        host.put(local, remote, mode)
    if changed or unvouched:
        record(host, want)
    out(f"push: {len(changed)} updated, {len(files) - len(changed)} unchanged")
    return changed
