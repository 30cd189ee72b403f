"""push: only files whose sha256 differs on the lab host are uploaded; missing builds say how
to build."""

from __future__ import annotations

import hashlib

import pytest

from lab import push
from lab.agent import NOMAD_BIN, PLUGIN_BINARY, PLUGIN_DIR
from lab.config import LabConfig
from lab.errors import LabError

PLUGIN_REMOTE = f"{PLUGIN_DIR}/{PLUGIN_BINARY}"


@pytest.fixture
def config(tmp_path) -> LabConfig:
    build = tmp_path / "build"
    (build / "jars").mkdir(parents=True)
    (build / "nomad").write_bytes(b"nomad binary")
    (build / PLUGIN_BINARY).write_bytes(b"plugin binary v2")
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
        f"{push.JAR_DIR}/hello.jar": (build / "jars" / "hello.jar", "0644"),
        f"{push.JAR_DIR}/sleeper.jar": (build / "jars" / "sleeper.jar", "0644"),
    }


@pytest.mark.parametrize("missing", ["nomad", PLUGIN_BINARY])
def test_missing_builds_name_the_file_and_the_build_command(config, missing):
    (config.build_dir / missing).unlink()
    with pytest.raises(LabError) as info:
        push.manifest(config)
    assert str(config.build_dir / missing) in str(info.value)
    assert "./invoke plugin.build" in str(info.value)


def test_no_jars_is_not_an_error(config):
    for jar in (config.build_dir / "jars").glob("*.jar"):
        jar.unlink()
    assert sorted(push.manifest(config)) == sorted([NOMAD_BIN, PLUGIN_REMOTE])


def test_sha256_of_a_file_larger_than_one_read(tmp_path):
    data = bytes(range(256)) * 9000  # > 1 MiB: several reads
    path = tmp_path / "big"
    path.write_bytes(data)
    assert push.sha256(path) == digest(data)


def test_remote_sums_parses_sha256sum_output(host):
    host.on("sha256sum",
            f"{'a' * 64}  /opt/lab/bin/nomad\n\n{'b' * 64}  /opt/lab/jars/my app.jar\n")
    sums = push.remote_sums(host, ["/opt/lab/bin/nomad", "/opt/lab/jars/my app.jar",
                                   "/opt/lab/missing"])
    assert sums == {"/opt/lab/bin/nomad": "a" * 64, "/opt/lab/jars/my app.jar": "b" * 64}
    (call,) = host.calls
    assert "'/opt/lab/jars/my app.jar'" in call.cmd and call.sudo and not call.check


def test_push_uploads_only_what_changed(config, host):
    host.on("sha256sum", f"{digest(b'nomad binary')}  {NOMAD_BIN}\n"
                         f"{digest(b'plugin binary v1')}  {PLUGIN_REMOTE}\n"
                         f"{digest(b'sleeper jar')}  {push.JAR_DIR}/sleeper.jar\n")
    lines: list[str] = []
    changed = push.push(host, config, out=lines.append)
    assert changed == [PLUGIN_REMOTE, f"{push.JAR_DIR}/hello.jar"]
    build = config.build_dir
    assert host.puts == [(build / PLUGIN_BINARY, PLUGIN_REMOTE, "0755"),
                         (build / "jars" / "hello.jar", f"{push.JAR_DIR}/hello.jar", "0644")]
    assert lines[-1] == "push: 2 updated, 2 unchanged"
    assert lines[0].startswith(f"push: {PLUGIN_BINARY} -> {PLUGIN_REMOTE} (")


def test_push_when_everything_is_current_uploads_nothing(config, host):
    files = push.manifest(config)
    host.on("sha256sum", "".join(f"{push.sha256(local)}  {remote}\n"
                                 for remote, (local, _) in files.items()))
    lines: list[str] = []
    assert push.push(host, config, out=lines.append) == []
    assert host.puts == [] and lines == ["push: 0 updated, 4 unchanged"]


def test_push_to_a_fresh_host_uploads_everything(config, host):
    assert len(push.push(host, config, out=lambda line: None)) == 4
    assert len(host.puts) == 4
