"""push: only files whose sha256 differs on the lab host are uploaded; missing builds say how
to build."""

from __future__ import annotations

import hashlib

import pytest

from lab.core.config import LabConfig
from lab.core.errors import LabError
from lab.provision import push
from lab.remote import layout
from lab.remote.layout import NOMAD_BIN, PLUGIN_BINARY, PLUGIN_DIR, SHIM_PATH, SHIM_RELPATH

PLUGIN_REMOTE = f"{PLUGIN_DIR}/{PLUGIN_BINARY}"


@pytest.fixture
def config(tmp_path) -> LabConfig:
    build = tmp_path / "build"
    (build / "jars").mkdir(parents=True)
    (build / "nomad").write_bytes(b"nomad binary")
    (build / PLUGIN_BINARY).write_bytes(b"plugin binary v2")
    (build / SHIM_RELPATH).parent.mkdir()
    (build / SHIM_RELPATH).write_bytes(b"shim binary v2")
    (build / "jars" / "hello.jar").write_bytes(b"hello jar")
    (build / "jars" / "sleeper.jar").write_bytes(b"sleeper jar")
    (build / "jars" / "notes.txt").write_text("not a jar")
    return LabConfig(root=tmp_path)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_manifest_maps_remote_paths_to_local_files_and_modes(config):
    build = config.build_dir
    assert push.manifest(config) == {
        NOMAD_BIN: (build / "nomad", "0755"),
        PLUGIN_REMOTE: (build / PLUGIN_BINARY, "0755"),
        SHIM_PATH: (build / SHIM_RELPATH, "0755"),
        f"{layout.JAR_DIR}/hello.jar": (build / "jars" / "hello.jar", "0644"),
        f"{layout.JAR_DIR}/sleeper.jar": (build / "jars" / "sleeper.jar", "0644"),
    }


@pytest.mark.parametrize("missing", ["nomad", PLUGIN_BINARY, SHIM_RELPATH])
def test_missing_builds_name_the_file_and_the_build_command(config, missing):
    (config.build_dir / missing).unlink()
    with pytest.raises(LabError) as info:
        push.manifest(config)
    assert str(config.build_dir / missing) in str(info.value)
    assert "./invoke plugin.build" in str(info.value)


def test_no_jars_is_not_an_error(config):
    for jar in (config.build_dir / "jars").glob("*.jar"):
        jar.unlink()
    assert sorted(push.manifest(config)) == sorted([NOMAD_BIN, PLUGIN_REMOTE, SHIM_PATH])


def test_sha256_of_a_file_larger_than_one_read(tmp_path):
    data = bytes(range(256)) * 9000  # > 1 MiB: several reads
    path = tmp_path / "big"
    path.write_bytes(data)
    assert push.sha256(path) == digest(data)


def stat_answer(files: dict[str, bytes], manifest: dict | None = None, mtime: int = 1700000000):
    """What the lab host answers to remote_sums' first command: MANIFEST, then stat lines."""
    import json

    stats = "".join(f"{len(data)} {mtime} {path}\n" for path, data in files.items())
    return (json.dumps(manifest) if manifest is not None else "") + "\n--- stat\n" + stats


def vouched(files: dict[str, bytes], mtime: int = 1700000000) -> dict:
    return {p: {"sha256": digest(d), "size": len(d), "mtime": mtime} for p, d in files.items()}


def test_remote_sums_trusts_the_manifest_when_size_and_mtime_match(host):
    files = {NOMAD_BIN: b"nomad binary", "/opt/lab/jars/my app.jar": b"jar"}
    host.on("--- stat", stat_answer(files, vouched(files)))
    sums = push.remote_sums(host, [*files, "/opt/lab/missing"])
    assert sums == {p: digest(d) for p, d in files.items()}
    (call,) = host.calls
    assert "'/opt/lab/jars/my app.jar'" in call.cmd and call.sudo and not call.check
    assert not host.ran("sha256sum"), "one round trip: nothing hashed on the lab host"


def test_remote_sums_hashes_what_the_manifest_cannot_vouch_for(host):
    files = {NOMAD_BIN: b"nomad binary", PLUGIN_REMOTE: b"plugin"}
    record = vouched(files)
    record[PLUGIN_REMOTE]["mtime"] += 5  # replaced behind push's back
    host.on("--- stat", stat_answer(files, record))
    host.on("sha256sum", f"{'b' * 64}  {PLUGIN_REMOTE}\n")
    assert push.remote_sums(host, list(files)) == {NOMAD_BIN: digest(b"nomad binary"),
                                                  PLUGIN_REMOTE: "b" * 64}
    (hashing,) = host.ran("sha256sum")
    assert PLUGIN_REMOTE in hashing.cmd and NOMAD_BIN not in hashing.cmd


def test_push_uploads_only_what_changed_and_records_the_manifest(config, host):
    current = {NOMAD_BIN: b"nomad binary", PLUGIN_REMOTE: b"plugin binary v1",
               SHIM_PATH: b"shim binary v2",
               f"{layout.JAR_DIR}/sleeper.jar": b"sleeper jar"}
    host.on("--- stat", stat_answer(current, vouched(current)))
    lines: list[str] = []
    changed = push.push(host, config, out=lines.append)
    assert changed == [PLUGIN_REMOTE, f"{layout.JAR_DIR}/hello.jar"]
    build = config.build_dir
    assert host.puts == [(build / PLUGIN_BINARY, PLUGIN_REMOTE, "0755"),
                         (build / "jars" / "hello.jar", f"{layout.JAR_DIR}/hello.jar", "0644")]
    assert lines[-1] == "push: 2 updated, 3 unchanged"
    assert lines[0].startswith(f"push: {PLUGIN_BINARY} -> {PLUGIN_REMOTE} (")
    assert layout.MANIFEST in host.files


def test_push_when_everything_is_current_uploads_nothing_in_one_round_trip(config, host):
    files = {remote: local.read_bytes() for remote, (local, _) in push.manifest(config).items()}
    host.on("--- stat", stat_answer(files, vouched(files)))
    lines: list[str] = []
    assert push.push(host, config, out=lines.append) == []
    assert host.puts == [] and lines == ["push: 0 updated, 5 unchanged"]
    assert len(host.calls) == 1 and layout.MANIFEST not in host.files


def test_push_to_a_fresh_host_uploads_everything(config, host):
    assert len(push.push(host, config, out=lambda line: None)) == 5
    assert len(host.puts) == 5


def test_stale_names_each_file_that_differs_from_this_trees_build(config, host):
    files = {remote: local.read_bytes() for remote, (local, _) in push.manifest(config).items()}
    files[PLUGIN_REMOTE] = b"an older plugin"
    del files[f"{layout.JAR_DIR}/hello.jar"]
    host.on("--- stat", stat_answer(files, vouched(files)))
    assert push.stale(host, config) == [
        f"{PLUGIN_REMOTE} differs from {config.build_dir / PLUGIN_BINARY}",
        f"{layout.JAR_DIR}/hello.jar is not on the lab host; build: "
        f"{config.build_dir / 'jars' / 'hello.jar'}"]


# -- the pytest session's refusal of a stale lab host ------------------------------------------


def test_a_lab_host_without_nomad_or_the_plugin_is_told_to_run_lab_up(config, host):
    from lab.pytest_plugin import _refuse_a_stale_lab_host

    host.on("--- stat", stat_answer({}))
    with pytest.raises(LabError) as err:
        _refuse_a_stale_lab_host(host, config)
    assert f"{NOMAD_BIN} is not on the lab host" in str(err.value)
    assert "the lab host was never brought up (or was reset): run `./invoke lab.up`" in str(
        err.value)


def test_a_lab_host_with_an_older_plugin_is_told_to_push(config, host):
    from lab.pytest_plugin import _refuse_a_stale_lab_host

    files = {remote: local.read_bytes() for remote, (local, _) in push.manifest(config).items()}
    files[PLUGIN_REMOTE] = b"an older plugin"
    host.on("--- stat", stat_answer(files, vouched(files)))
    with pytest.raises(LabError) as err:
        _refuse_a_stale_lab_host(host, config)
    assert f"{PLUGIN_REMOTE} differs from" in str(err.value)
    assert "run `./invoke plugin.build lab.push` first" in str(err.value)
    assert "lab.up" not in str(err.value)


def test_a_files_sha256_is_read_again_only_when_its_size_or_mtime_changes(tmp_path):
    import os

    jar = tmp_path / "app.jar"
    jar.write_bytes(b"first")
    assert push.sha256(jar) == digest(b"first")
    stat = jar.stat()
    jar.write_bytes(b"other")  # same size; its mtime put back: the record vouches for it
    os.utime(jar, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert push.sha256(jar) == digest(b"first")
    os.utime(jar, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # touched: hashed again
    assert push.sha256(jar) == digest(b"other")
    jar.write_bytes(b"longer one")
    assert push.sha256(jar) == digest(b"longer one")


def test_the_runs_first_checks_refuse_a_bare_host_in_one_round_trip(config, monkeypatch):
    """The session's start (build check, leftover scan, facts) as one batch, run by real bash
    on this machine, which has none of the lab's files: refused, with lab.up as the fix."""
    import os
    import subprocess
    from types import SimpleNamespace

    from lab.pytest_plugin import _start_the_run
    from lab.remote.host import CommandResult

    calls = []

    def run(cmd, *, sudo=False, check=True, timeout=None):
        calls.append(cmd)
        proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True,
                              env=os.environ, timeout=60)
        return CommandResult(cmd, proc.returncode, proc.stdout, proc.stderr)

    host = SimpleNamespace(spec=SimpleNamespace(url="ssh://local"), run=run,
                           sudo=lambda cmd, **kw: run(cmd, sudo=True, **kw))
    with pytest.raises(LabError, match=r"(?s)is not on the lab host.*run `./invoke lab.up`"):
        _start_the_run(host, config)
    assert len(calls) == 1
