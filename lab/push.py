"""Push the builds to the lab host over SSH, only what changed (by sha256)."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

from lab.agent import NOMAD_BIN, PLUGIN_BINARY, PLUGIN_DIR, REMOTE_ROOT
from lab.config import LabConfig
from lab.errors import LabError
from lab.host import LabHost

JAR_DIR = f"{REMOTE_ROOT}/jars"


def manifest(config: LabConfig) -> dict[str, tuple[Path, str]]:
    """remote path -> (local file, mode) for everything the lab host needs."""
    build = config.build_dir
    files = {NOMAD_BIN: (build / "nomad", "0755"),
             f"{PLUGIN_DIR}/{PLUGIN_BINARY}": (build / PLUGIN_BINARY, "0755")}
    for jar in sorted((build / "jars").glob("*.jar")):
        files[f"{JAR_DIR}/{jar.name}"] = (jar, "0644")
    missing = [str(local) for local, _ in files.values() if not local.exists()]
    if missing:
        raise LabError(f"nothing to push for {missing}: build first with `./invoke plugin.build`")
    return files


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remote_sums(host: LabHost, paths: list[str]) -> dict[str, str]:
    quoted = " ".join(shlex.quote(p) for p in paths)
    out = host.sudo(f"sha256sum {quoted} 2>/dev/null; true", check=False).stdout
    return {path: digest for digest, path in (line.split(maxsplit=1) for line in out.splitlines()
                                              if line.strip())}


def push(host: LabHost, config: LabConfig, out=print) -> list[str]:
    """Upload changed files; return the remote paths that were updated."""
    files = manifest(config)
    have = remote_sums(host, list(files))
    changed = [remote for remote, (local, _) in files.items() if have.get(remote) != sha256(local)]
    for remote in changed:
        local, mode = files[remote]
        out(f"push: {local.name} -> {remote} ({local.stat().st_size / 1e6:.1f} MB)")
        host.put(local, remote, mode)
    out(f"push: {len(changed)} updated, {len(files) - len(changed)} unchanged")
    return changed
