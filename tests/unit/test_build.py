"""lab.provision.build and .badjars: up-to-date logic, JAR layout, go build commands, versions.

Fakes stand in for javac and go; one test (test_real_javac_builds_a_runnable_jar) really
compiles a tiny app, since the JDK is on every machine that runs the lab.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from lab.core.errors import LabError
from lab.provision import badjars, build

HELLO = """package lab.apps.{name};

public class {cls} {{
    public static void main(String[] args) {{
        System.out.println("{name} ran");
    }}
}}
"""


def write_app(root: Path, name: str, cls: str | None = None, text: str | None = None) -> Path:
    cls = cls or name.capitalize()
    source = root / "tests" / "apps" / name / f"{cls}.java"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(text if text is not None else HELLO.format(name=name, cls=cls))
    return source


class FakeJavac:
    """Pretends to be javac: writes one .class per source under -d, in its package's dir."""

    def __init__(self, fail_with: str = ""):
        self.calls: list[list[str]] = []
        self.fail_with = fail_with

    def __call__(self, cmd, **kwargs):
        self.calls.append(cmd)
        if self.fail_with:
            return subprocess.CompletedProcess(cmd, 1, "", self.fail_with)
        out = Path(cmd[cmd.index("-d") + 1])
        for source in (Path(arg) for arg in cmd if arg.endswith(".java")):
            package = source.read_text().split("package ", 1)[1].split(";", 1)[0]
            target = out / package.replace(".", "/") / f"{source.stem}.class"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"\xca\xfe\xba\xbe" + source.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    def compiled(self, call: int = -1) -> list[str]:
        return sorted(Path(arg).stem for arg in self.calls[call] if arg.endswith(".java"))


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "javac_binary", lambda: "/fake/javac")
    return SimpleNamespace(root=tmp_path, build_dir=tmp_path / "build")


def test_builds_every_app_then_only_what_changed(project):
    for name in ("hello", "exitcode", "sleeper"):
        write_app(project.root, name)
    javac, logs = FakeJavac(), []

    jars = build.build_apps(project, logs.append, run=javac)
    assert sorted(jars) == ["exitcode", "hello", "sleeper"]
    assert all(jar.exists() for jar in jars.values())
    assert javac.compiled() == ["Exitcode", "Hello", "Sleeper"]  # one javac for all
    assert logs[-1].startswith("apps: built 3, up to date 0, bad jars 5 (")

    build.build_apps(project, logs.append, run=javac)
    assert len(javac.calls) == 1
    assert logs[-1].startswith("apps: built 0, up to date 3,")

    write_app(project.root, "hello", text=HELLO.format(name="hello", cls="Hello") + "// edit\n")
    (project.build_dir / "jars" / "sleeper.jar").unlink()
    build.build_apps(project, logs.append, run=javac)
    assert javac.compiled() == ["Hello", "Sleeper"]
    assert logs[-1].startswith("apps: built 2, up to date 1,")


def test_a_new_source_file_or_recipe_change_rebuilds(project, monkeypatch):
    write_app(project.root, "hello")
    javac = FakeJavac()
    build.build_apps(project, lambda _: None, run=javac)
    write_app(project.root, "hello", cls="Helper",
              text="package lab.apps.hello;\nclass Helper {}\n")
    build.build_apps(project, lambda _: None, run=javac)
    assert javac.compiled() == ["Hello", "Helper"]
    monkeypatch.setattr(build, "JAR_RECIPE", build.JAR_RECIPE + " changed")
    build.build_apps(project, lambda _: None, run=javac)
    assert len(javac.calls) == 3


def test_jar_has_the_manifest_first_and_is_reproducible(project):
    write_app(project.root, "hello")
    jar = build.build_apps(project, lambda _: None, run=FakeJavac())["hello"]
    first = jar.read_bytes()
    with zipfile.ZipFile(jar) as archive:
        names = archive.namelist()
        manifest = archive.read("META-INF/MANIFEST.MF").decode()
    assert names == ["META-INF/MANIFEST.MF", "lab/apps/hello/Hello.class"]
    assert "Main-Class: lab.apps.hello.Hello\r\n" in manifest
    (project.build_dir / "jars" / build.HASHES_FILE).unlink()  # force a rebuild
    build.build_apps(project, lambda _: None, run=FakeJavac())
    assert jar.read_bytes() == first


def test_compiler_errors_carry_the_output_and_record_nothing(project):
    write_app(project.root, "hello")
    with pytest.raises(build.BuildFailed) as failure:
        build.build_apps(project, lambda _: None,
                         run=FakeJavac("Hello.java:3: error: ';' expected"))
    assert "Hello.java:3: error: ';' expected" in str(failure.value)
    assert "fix:" in str(failure.value)
    assert not (project.build_dir / "jars" / build.HASHES_FILE).exists()


def test_package_rule_and_single_main_are_enforced(project):
    write_app(project.root, "hello",
              text="public class Hello { public static void main(String[] a) {} }")
    with pytest.raises(LabError, match=r"package lab\.apps\.hello;"):
        build.build_apps(project, lambda _: None, run=FakeJavac())
    write_app(project.root, "hello", text="package lab.apps.hello;\nclass Hello {}\n")
    with pytest.raises(LabError, match="exactly one class"):
        build.build_apps(project, lambda _: None, run=FakeJavac())


def test_no_apps_is_an_error_that_says_where_it_looked(project):
    with pytest.raises(LabError, match="no test applications found under"):
        build.build_apps(project, lambda _: None, run=FakeJavac())


def test_the_repositorys_apps_follow_the_rules():
    apps = build.discover_apps(build.Path(__file__).resolve().parents[2] / build.APPS_DIR)
    assert {"hello", "exitcode", "sleeper", "ignoreterm", "signals", "flakyonce", "alwaysfail",
            "memhog", "bigoutput", "fsprobe"} <= set(apps)
    for name, sources in apps.items():
        assert build.main_class(name, sources).startswith(f"lab.apps.{name}.")


@pytest.mark.skipif(shutil.which("javac") is None or shutil.which("java") is None,
                    reason="needs a JDK (javac and java) on PATH")
def test_real_javac_builds_a_runnable_jar(tmp_path):
    project = SimpleNamespace(root=tmp_path, build_dir=tmp_path / "build")
    write_app(tmp_path, "tiny")
    jar = build.build_apps(project, lambda _: None)["tiny"]
    result = subprocess.run(["java", "-jar", str(jar)], capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stdout) == (0, "tiny ran\n")


# -- go builds ------------------------------------------------------------------------------

class FakeRunner:
    """Answers commands by their first words; records each call with its keyword arguments."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]]):
        self.answers, self.calls = answers, []

    def __call__(self, cmd, **kwargs):
        self.calls.append((cmd, kwargs))
        words = [Path(cmd[0]).name, *cmd[1:]]
        for prefix, (rc, out, err) in self.answers.items():
            if tuple(words[: len(prefix)]) == prefix:
                return subprocess.CompletedProcess(cmd, rc, out, err)
        return subprocess.CompletedProcess(cmd, 0, "", "")


@pytest.fixture
def go_project(tmp_path, monkeypatch):
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "go.mod").write_text("module example\n")
    monkeypatch.setattr(build, "go_binary", lambda: "/fake/go")
    return SimpleNamespace(root=tmp_path, build_dir=tmp_path / "build")


def test_build_plugin_stamps_the_commit_and_builds_static_in_plugin_dir(go_project):
    run = FakeRunner({("git", "-C", str(go_project.root), "log"): (0, "abc1234\n", ""),
                      ("git", "-C", str(go_project.root), "status"): (0, " M plugin/x.go\n", "")})
    logs = []
    out = build.build_plugin(go_project, logs.append, run=run)
    assert out == go_project.build_dir / "nomad-driver-java-crun"
    (cmd, kwargs), (shim_cmd, _) = [c for c in run.calls if c[0][1:2] == ["build"]]
    assert cmd[:3] == ["/fake/go", "build", "-trimpath"]
    assert cmd[cmd.index("-ldflags") + 1] == f"-X {build.PLUGIN_VERSION_PKG}.Commit=abc1234+dirty"
    assert cmd[-3:] == ["-o", str(out), "."]
    # The shim: same stamp (the driver refuses a shim of another build), beside the plugin.
    assert shim_cmd[shim_cmd.index("-ldflags") + 1] == cmd[cmd.index("-ldflags") + 1]
    assert shim_cmd[-3:] == ["-o", str(go_project.build_dir / "java-crun.d" / "java-crun-shim"),
                             "./cmd/java-crun-shim"]
    assert kwargs["cwd"] == go_project.root / "plugin"
    assert kwargs["env"]["CGO_ENABLED"] == "0"
    assert json.loads((go_project.build_dir / build.PLUGIN_STAMP).read_text()) == {
        "Commit": "abc1234+dirty"}
    assert logs[-2].startswith("nomad-driver-java-crun: built the java-crun driver in ")
    assert logs[-1].startswith("java-crun-shim: built the java-crun shim in ")


def test_plugin_version_file_is_stamped_too_and_clean_tree_has_no_dirty_mark(go_project):
    (go_project.root / "plugin" / "VERSION").write_text("v1.2.3\n")
    run = FakeRunner({("git", "-C", str(go_project.root), "log"): (0, "abc1234\n", "")})
    build.build_plugin(go_project, lambda _: None, run=run)
    ldflags = run.calls[-1][0][run.calls[-1][0].index("-ldflags") + 1]
    assert ldflags == (f"-X {build.PLUGIN_VERSION_PKG}.Version=v1.2.3 "
                       f"-X {build.PLUGIN_VERSION_PKG}.Commit=abc1234")


def test_the_commit_is_the_last_one_that_changed_the_plugin_not_head(tmp_path):
    run = FakeRunner({("git", "-C", str(tmp_path), "log"): (0, "p1u9in0\n", "")})
    assert build.git_commit(tmp_path, run=run) == "p1u9in0"
    (log_cmd, _), _ = run.calls
    assert log_cmd[-3:] == ["--", "plugin", ":(exclude)plugin/*.md"]


def test_outside_git_the_commit_is_unknown(tmp_path):
    run = FakeRunner({("git",): (128, "", "fatal: not a git repository")})
    assert build.git_commit(tmp_path, run=run) == "unknown"


def test_build_nomad_builds_the_pinned_module_and_fails_with_the_output_tail(go_project):
    run = FakeRunner({})
    assert build.build_nomad(go_project, lambda _: None, run=run) == go_project.build_dir / "nomad"
    assert run.calls[-1][0][-3:] == ["-o", str(go_project.build_dir / "nomad"),
                                     "github.com/hashicorp/nomad"]
    noise = "\n".join(f"line {i}" for i in range(100))
    failing = FakeRunner({("go", "build"): (1, "", noise + "\nmain.go:1: undefined: x")})
    with pytest.raises(build.BuildFailed) as failure:
        build.build_nomad(go_project, lambda _: None, run=failing)
    message = str(failure.value)
    assert "the Nomad agent" in message and "main.go:1: undefined: x" in message
    assert "line 10\n" not in message  # only the tail


class WritingRunner(FakeRunner):
    """A `go build` that writes its -o file, as the real one does."""

    def __call__(self, cmd, **kwargs):
        if cmd[1:2] == ["build"]:
            Path(cmd[cmd.index("-o") + 1]).write_bytes(b"binary of " + " ".join(cmd).encode())
        return super().__call__(cmd, **kwargs)


def builds(run: FakeRunner) -> list[str]:
    return [cmd[-1] for cmd, _ in run.calls if cmd[1:2] == ["build"]]


def test_a_binary_whose_inputs_did_not_change_is_not_rebuilt(go_project, monkeypatch):
    plugin = go_project.root / "plugin"
    (plugin / "main.go").write_text("package main\n")
    (plugin / "README.md").write_text("docs\n")
    run = WritingRunner({("git", "-C", str(go_project.root), "log"): (0, "abc1234\n", "")})

    def build_both() -> list[str]:
        run.calls.clear()
        build.build_nomad(go_project, lambda _: None, run=run)
        build.build_plugin(go_project, lambda _: None, run=run)
        return builds(run)

    assert build_both() == [build.NOMAD_PKG, ".", build.SHIM_PACKAGE]
    assert build_both() == []
    (plugin / "README.md").write_text("more docs\n")  # not an input
    assert build_both() == []
    (plugin / "main.go").write_text("package main\n\nfunc f() {}\n")  # the plugin's only
    assert build_both() == [".", build.SHIM_PACKAGE]
    (plugin / "go.sum").write_text("example v1 h1:x\n")  # everything's
    assert build_both() == [build.NOMAD_PKG, ".", build.SHIM_PACKAGE]
    monkeypatch.setenv("GOAMD64", "v3")  # changes what go build makes
    assert build_both() == [build.NOMAD_PKG, ".", build.SHIM_PACKAGE]
    (go_project.build_dir / "nomad").write_bytes(b"replaced by hand")  # not what was built
    assert build_both() == [build.NOMAD_PKG]
    run.answers[("git", "-C", str(go_project.root), "log")] = (0, "def5678\n", "")
    assert build_both() == [".", build.SHIM_PACKAGE]  # a new commit: new -ldflags
    # `go env -w GOFLAGS=-tags=x` (in go's own env file, not the environment) changes what
    # go env reports: everything is built again.
    run.answers[("go", "env")] = (0, '{"GOFLAGS": "-tags=x", "GOVERSION": "go1.26.8"}', "")
    assert build_both() == [build.NOMAD_PKG, ".", build.SHIM_PACKAGE]
    assert build_both() == []


def test_missing_go_module_says_what_is_expected(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "go_binary", lambda: "/fake/go")
    project = SimpleNamespace(root=tmp_path, build_dir=tmp_path / "build")
    with pytest.raises(LabError, match="go.mod is missing"):
        build.build_nomad(project, lambda _: None, run=FakeRunner({}))


def test_write_versions_reads_each_tool(go_project):
    build_dir = go_project.build_dir
    run = FakeRunner({
        ("nomad", "version"): (0, "Nomad v1.11.3\nBuildDate 2026-03-11\n", ""),
        ("nomad-driver-java-crun", "version"): (0, "nomad-driver-java-crun v0.1.0 "
                                                   "(commit abc1234+dirty)\n", ""),
        ("go", "version"): (0, "go version go1.26.8 linux/amd64\n", ""),
        ("javac", "-version"): (0, "javac 17.0.15\n", ""),
    })
    versions = build.write_versions(go_project, run=run)
    assert {k: v for k, v in versions.items() if k != "built_at"} == {
        "nomad": "v1.11.3", "plugin": "v0.1.0", "commit": "abc1234+dirty", "go": "go1.26.8",
        "java": "17.0.15"}
    assert json.loads((build_dir / "versions.json").read_text()) == versions


def test_write_versions_falls_back_to_the_recorded_stamp(go_project):
    go_project.build_dir.mkdir()
    (go_project.build_dir / build.PLUGIN_STAMP).write_text('{"Commit": "abc1234"}')
    run = FakeRunner({("nomad-driver-java-crun",): (1, "", "This binary is a plugin.")})
    versions = build.write_versions(go_project, run=run)
    assert versions["commit"] == "abc1234"
    assert versions["plugin"] == "unknown"


def test_versions_are_read_again_only_when_a_binary_is_newer_than_them(go_project):
    build_dir = go_project.build_dir
    (build_dir / "java-crun.d").mkdir(parents=True)
    for name in ("nomad", "nomad-driver-java-crun", "java-crun.d/java-crun-shim"):
        (build_dir / name).write_text(name)
    run = FakeRunner({("nomad", "version"): (0, "Nomad v1.11.3\n", "")})
    assert build.write_versions_if_stale(go_project, run=run)["nomad"] == "v1.11.3"
    run.calls.clear()
    assert build.write_versions_if_stale(go_project, run=run)["nomad"] == "v1.11.3"
    assert run.calls == []
    later = (build_dir / "versions.json").stat().st_mtime_ns + 1_000_000_000
    os.utime(build_dir / "nomad", ns=(later, later))  # rebuilt since
    run.answers[("nomad", "version")] = (0, "Nomad v1.11.4\n", "")
    assert build.write_versions_if_stale(go_project, run=run)["nomad"] == "v1.11.4"


# -- bad JARs --------------------------------------------------------------------------------

def test_bad_jars_are_each_broken_in_their_own_way_and_deterministic(tmp_path):
    real = tmp_path / "hello.jar"
    real.write_bytes(badjars.runnable_stand_in())
    paths = badjars.write_bad_jars(tmp_path / "bad", real)
    assert sorted(paths) == sorted(badjars.BAD_JARS)
    data = {name: path.read_bytes() for name, path in paths.items()}
    assert data["empty"] == b""
    assert not zipfile.is_zipfile(io.BytesIO(data["random"]))
    assert real.read_bytes().startswith(data["truncated"])
    assert not zipfile.is_zipfile(io.BytesIO(data["truncated"]))
    with zipfile.ZipFile(io.BytesIO(data["nomain"])) as jar:
        assert "Main-Class" not in jar.read("META-INF/MANIFEST.MF").decode()
    with zipfile.ZipFile(io.BytesIO(data["badclass"])) as jar:
        assert jar.testzip() is None  # a valid zip: every entry's CRC checks
        assert f"Main-Class: {badjars.BAD_CLASS_MAIN}" in jar.read("META-INF/MANIFEST.MF").decode()
        main = jar.read(badjars.BAD_CLASS_MAIN.replace(".", "/") + ".class")
        assert len(main) > 1000 and not main.startswith(b"\xca\xfe\xba\xbe")
    assert badjars.bad_jar_bytes(real.read_bytes()) == data


def test_unchanged_bad_jars_are_not_rewritten(tmp_path):
    paths = badjars.write_bad_jars(tmp_path)
    os.utime(paths["random"], (1, 1))
    badjars.write_bad_jars(tmp_path)
    assert paths["random"].stat().st_mtime == 1


def test_padded_jar_keeps_the_manifest_and_reaches_the_size(tmp_path):
    base = tmp_path / "hello.jar"
    base.write_bytes(badjars.runnable_stand_in())
    big = badjars.padded_jar(base, tmp_path / "big" / "hello-big.jar", size_mb=2)
    assert big.stat().st_size >= 2 << 20
    with zipfile.ZipFile(big) as jar:
        assert "Main-Class: lab.apps.hello.Hello" in jar.read("META-INF/MANIFEST.MF").decode()
        assert jar.testzip() is None
