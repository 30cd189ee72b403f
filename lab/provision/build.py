"""Builds what the lab deploys: the test JARs (javac + zipfile), the Nomad agent and the
java-crun driver (go build from plugin/'s module graph), and records their versions.

Everything here runs on the control host. `config` is anything with `root` (the repository)
and `build_dir` (where outputs go), e.g. lab.core.config.LabConfig.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from lab.core.errors import LabError
from lab.provision import badjars
from lab.provision.badjars import ZIP_EPOCH
from lab.remote.layout import PLUGIN_BINARY, SHIM_RELPATH

# Where the driver keeps the values its version command and PluginInfo report (plugin/version).
PLUGIN_VERSION_PKG = "github.com/nomad-lab/nomad-driver-java-crun/version"
NOMAD_PKG = "github.com/hashicorp/nomad"
SHIM_PACKAGE = "./cmd/java-crun-shim"
# What the plugin is built from, as git pathspecs: plugin/ but its Markdown.
PLUGIN_SOURCES = ("plugin", ":(exclude)plugin/*.md")
PLUGIN_STAMP = "nomad-driver-java-crun.stamp.json"  # the -X values of the last plugin build
# Static binaries: the box may run an older Debian (glibc) than the control host.
GO_ENV = {"CGO_ENABLED": "0"}
GO_FLAGS = ["-trimpath"]

# The oldest JRE among the lab's Debian releases (bullseye: openjdk-11); newer JREs run it too.
JAVA_RELEASE = "11"
APPS_DIR = Path("tests/apps")
APP_PACKAGE = "lab.apps"  # each app's classes live in package lab.apps.<app name>
# Part of every app's hash: bump it when the way JARs are made changes, to rebuild them all.
JAR_RECIPE = f"javac --release {JAVA_RELEASE}; zipfile stored 1980; recipe 1"
HASHES_FILE = ".hashes.json"
# Fixed entry times make a JAR's bytes depend on its classes only, so checksum-based pushes
# skip JARs that did not really change.

Log = Callable[[str], None]
Runner = Callable[..., subprocess.CompletedProcess]


class BuildFailed(LabError):
    """A compiler or build tool failed; carries the tail of its output."""

    def __init__(self, what: str, cmd: list[str] | str, rc: int | None, output: str,
                 hint: str = ""):
        self.what, self.cmd, self.rc, self.output = what, cmd, rc, output
        shown = cmd if isinstance(cmd, str) else " ".join(cmd)
        msg = f"building {what} failed: `{shown}` exited {rc}"
        tail = "\n".join("    " + line for line in output.strip().splitlines()[-25:])
        if tail:
            msg += f":\n{tail}"
        if hint:
            msg += f"\nfix: {hint}"
        super().__init__(msg)


# -- Java test applications -----------------------------------------------------------------

def discover_apps(apps_dir: Path) -> dict[str, list[Path]]:
    """App name → its .java files: every directory under tests/apps holding Java sources."""
    if not apps_dir.is_dir():
        return {}
    apps = {}
    for directory in sorted(p for p in apps_dir.iterdir() if p.is_dir()):
        sources = sorted(directory.rglob("*.java"))
        if sources:
            apps[directory.name] = sources
    return apps


def sources_hash(app_dir: Path, sources: list[Path]) -> str:
    """Changes when a source's name or content, or the JAR recipe, changes."""
    digest = hashlib.sha256(JAR_RECIPE.encode())
    for source in sorted(sources):
        digest.update(f"\0{source.relative_to(app_dir).as_posix()}\0".encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def main_class(name: str, sources: list[Path]) -> str:
    """The fully qualified class with `static void main`, checked against the package rule."""
    expected_package = f"{APP_PACKAGE}.{name}"
    mains = []
    for source in sources:
        text = source.read_text()
        package = re.search(r"^\s*package\s+([\w.]+)\s*;", text, re.MULTILINE)
        if not package or package.group(1) != expected_package:
            found = package.group(1) if package else "the default package"
            raise LabError(f"{source} is in {found}: every source of app {name!r} must start "
                           f"with `package {expected_package};`")
        if re.search(r"\bstatic\s+void\s+main\s*\(", text):
            mains.append(f"{expected_package}.{source.stem}")
    if len(mains) != 1:
        raise LabError(f"app {name!r} needs exactly one class with `public static void main`, "
                       f"found {mains or 'none'} in {[str(s) for s in sources]}")
    return mains[0]


def build_apps(config, log: Log = print, *, run: Runner = subprocess.run) -> dict[str, Path]:
    """Compile each app under tests/apps into build/jars/<name>.jar; skip unchanged ones.

    Also (re)writes the deliberately broken JARs in build/jars/bad/ (see lab.provision.badjars).
    """
    started = time.monotonic()
    apps_dir = Path(config.root) / APPS_DIR
    apps = discover_apps(apps_dir)
    if not apps:
        raise LabError(f"no test applications found under {apps_dir}: "
                       "each app is a directory of .java files")
    jars_dir = Path(config.build_dir) / "jars"
    jars_dir.mkdir(parents=True, exist_ok=True)
    recorded = _load_hashes(jars_dir)
    wanted = {name: sources_hash(apps_dir / name, sources) for name, sources in apps.items()}
    jars = {name: jars_dir / f"{name}.jar" for name in apps}
    stale = [name for name in apps if recorded.get(name) != wanted[name] or not jars[name].exists()]

    if stale:
        classes = {name: main_class(name, apps[name]) for name in stale}
        with tempfile.TemporaryDirectory(prefix="lab-javac-") as tmp:
            out = Path(tmp)
            # One javac for all stale apps: a JVM start costs more than compiling them.
            _javac([s for name in stale for s in apps[name]], out, run)
            for name in stale:
                package_dir = out / APP_PACKAGE.replace(".", "/") / name
                write_jar(package_dir, out, classes[name], jars[name])
                recorded[name] = wanted[name]
        _save_hashes(jars_dir, {name: recorded[name] for name in apps})

    bad = badjars.write_bad_jars(jars_dir / "bad", jars.get("hello"))
    elapsed = time.monotonic() - started
    log(f"apps: built {len(stale)}, up to date {len(apps) - len(stale)}, "
        f"bad jars {len(bad)} ({elapsed:.1f} s)")
    return jars


def javac_binary() -> str:
    javac = shutil.which("javac")
    if javac is None:
        raise LabError("javac not found on PATH: install a JDK 17 "
                       "(apt-get install openjdk-17-jdk-headless)")
    return javac


def _javac(sources: list[Path], out: Path, run: Runner) -> None:
    javac = javac_binary()
    # sun.misc.Signal/Unsafe trigger "internal proprietary API" warnings on purpose: the apps
    # need them. -nowarn keeps the output for real errors.
    cmd = [javac, "--release", JAVA_RELEASE, "-nowarn", "-encoding", "UTF-8", "-d", str(out),
           *map(str, sources)]
    result = run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildFailed("test applications", cmd, result.returncode,
                          result.stderr + result.stdout,
                          hint="fix the Java error above in tests/apps/")


def write_jar(package_dir: Path, classes_root: Path, main: str, dest: Path) -> Path:
    """Write a runnable JAR of the classes under package_dir, with a Main-Class manifest.

    Byte-for-byte reproducible: fixed entry order and timestamps. Written beside dest and
    renamed, so a reader never sees half a JAR.
    """
    class_files = sorted(package_dir.rglob("*.class")) if package_dir.is_dir() else []
    if not class_files:
        raise LabError(f"javac produced no classes under {package_dir} for {main}: is the "
                       f"package declaration `package {main.rsplit('.', 1)[0]};`?")
    manifest = (f"Manifest-Version: 1.0\r\nMain-Class: {main}\r\n"
                f"Created-By: lab.build\r\n\r\n")
    partial = dest.with_name(dest.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as jar:
        _add(jar, "META-INF/MANIFEST.MF", manifest.encode())
        for class_file in class_files:
            _add(jar, class_file.relative_to(classes_root).as_posix(), class_file.read_bytes())
    os.replace(partial, dest)
    return dest


def _add(jar: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    jar.writestr(info, data)


def _load_hashes(jars_dir: Path) -> dict[str, str]:
    try:
        return json.loads((jars_dir / HASHES_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _save_hashes(jars_dir: Path, hashes: dict[str, str]) -> None:
    (jars_dir / HASHES_FILE).write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n")


# -- Go: the driver and the Nomad agent ---------------------------------------------------

def build_plugin(config, log: Log = print, *, run: Runner = subprocess.run) -> Path:
    """go build the driver into build/nomad-driver-java-crun and its shim into
    build/java-crun.d/java-crun-shim, both stamped with one version and commit (the driver
    refuses a shim of another build)."""
    out = Path(config.build_dir) / PLUGIN_BINARY
    stamp = plugin_stamp(config, run=run)
    ldflags = " ".join(f"-X {PLUGIN_VERSION_PKG}.{key}={value}" for key, value in stamp.items())
    _go_build(config, "the java-crun driver", ["-ldflags", ldflags], out, ".", log, run)
    _go_build(config, "the java-crun shim", ["-ldflags", ldflags],
              Path(config.build_dir) / SHIM_RELPATH, SHIM_PACKAGE, log, run)
    (out.parent / PLUGIN_STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    return out


def build_nomad(config, log: Log = print, *, run: Runner = subprocess.run) -> Path:
    """go build the Nomad agent pinned by plugin/go.mod into build/nomad."""
    out = Path(config.build_dir) / "nomad"
    _go_build(config, "the Nomad agent", [], out, NOMAD_PKG, log, run)
    return out


def plugin_stamp(config, *, run: Runner = subprocess.run) -> dict[str, str]:
    """The -X values: Commit always; Version only when plugin/VERSION exists (otherwise the
    default in plugin/version/version.go stands)."""
    stamp = {}
    version_file = Path(config.root) / "plugin" / "VERSION"
    if version_file.exists():
        stamp["Version"] = version_file.read_text().strip()
    stamp["Commit"] = git_commit(Path(config.root), run=run)
    return stamp


def git_commit(root: Path, *, run: Runner = subprocess.run) -> str:
    """Short sha of the last commit that changed plugin/ (its docs aside), "+dirty" when it has
    uncommitted changes; "unknown" outside git. Not HEAD: a commit elsewhere in the tree leaves the
    plugin's build (and so the lab host's copy) as it was, and `lab.up` pushes nothing."""
    head = run(["git", "-C", str(root), "log", "-1", "--format=%h", "--", *PLUGIN_SOURCES],
               capture_output=True, text=True)
    if head.returncode != 0 or not head.stdout.strip():
        return "unknown"
    status = run(["git", "-C", str(root), "status", "--porcelain", "--", *PLUGIN_SOURCES],
                 capture_output=True, text=True)
    dirty = status.returncode != 0 or bool(status.stdout.strip())
    return head.stdout.strip() + ("+dirty" if dirty else "")


# Environment that changes what `go build` makes (besides GO_ENV, which is fixed).
GO_ENV_INPUTS = ("GOFLAGS", "GOOS", "GOARCH", "GOAMD64", "GOEXPERIMENT", "GOTOOLCHAIN",
                 "GOWORK", "GOPROXY", "GONOSUMDB", "GOPRIVATE")
BUILD_STAMPS = ".go-inputs.json"  # in build/: each binary's inputs at its last build


def go_inputs(plugin_dir: Path, package: str, cmd: list[str], env: dict,
              run: Runner = subprocess.run) -> str:
    """A digest of what a build of `package` depends on: the Go toolchain as `go env` sees it
    (its version and root, and settings made with `go env -w`, which the environment does not
    show), the command and its environment, go.mod and go.sum (Nomad comes from the module
    cache, which never changes under a version), and for the plugin's own packages every
    file in plugin/."""
    digest = hashlib.sha256()
    go_env = run([cmd[0], "env", "-json", "GOVERSION", "GOROOT", *GO_ENV_INPUTS, *GO_ENV],
                 cwd=plugin_dir, env=env, capture_output=True, text=True)
    toolchain = go_env.stdout if go_env.returncode == 0 else f"go env failed: {go_env.stderr}"
    environment = {key: os.environ.get(key, "") for key in GO_ENV_INPUTS}
    digest.update(json.dumps([toolchain, cmd[1:], GO_ENV, environment]).encode())
    if package.startswith("."):
        sources = sorted(p for p in plugin_dir.rglob("*") if p.is_file() and p.suffix != ".md")
    else:
        sources = [plugin_dir / "go.mod", plugin_dir / "go.sum"]
    for path in sources:
        digest.update(f"\0{path.relative_to(plugin_dir)}\0".encode())
        digest.update(path.read_bytes() if path.exists() else b"\0missing")
    return digest.hexdigest()


def _up_to_date(out: Path, inputs: str) -> bool:
    """out is what a build of these inputs made (its size and mtime are as recorded)."""
    recorded = _read_json(out.parent / BUILD_STAMPS).get(out.name, {})
    try:
        stat = out.stat()
    except OSError:
        return False
    return recorded == {"inputs": inputs, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _record_inputs(out: Path, inputs: str) -> None:
    stamps_file = out.parent / BUILD_STAMPS
    stamps = _read_json(stamps_file)
    stat = out.stat()
    stamps[out.name] = {"inputs": inputs, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    tmp = stamps_file.with_name(f"{BUILD_STAMPS}.{os.getpid()}")  # two runs may build at once
    tmp.write_text(json.dumps(stamps, indent=2, sort_keys=True) + "\n")
    tmp.replace(stamps_file)


def _go_build(config, what: str, extra: list[str], out: Path, package: str, log: Log,
              run: Runner) -> bool:
    """go build `package` into `out`, unless its inputs (go_inputs) are those of the binary
    already there: Go's own cache check of Nomad's ~2,000 packages takes ~0.7 s, the
    plugin's ~0.3 s, on every lab.up and test run. True when it built."""
    plugin_dir = Path(config.root) / "plugin"
    if not (plugin_dir / "go.mod").exists():
        raise LabError(f"{plugin_dir / 'go.mod'} is missing: the driver and the Nomad agent "
                       "are both built from plugin/'s Go module")
    go = go_binary()
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [go, "build", *GO_FLAGS, *extra, "-o", str(out), package]
    env = {**os.environ, **GO_ENV}
    inputs = go_inputs(plugin_dir, package, cmd, env, run)
    if _up_to_date(out, inputs):
        log(f"{out.name}: {what} is up to date (its inputs are those of its last build)")
        return False
    started = time.monotonic()
    if run is subprocess.run:
        # A cold Nomad build takes minutes: show that it is alive and how far it has got.
        result = _go_build_with_progress([go, "build", "-v", *cmd[2:]], plugin_dir, env,
                                         out.name, package, log)
    else:
        result = run(cmd, cwd=plugin_dir, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildFailed(what, cmd, result.returncode, result.stderr + result.stdout,
                          hint=f"run the command in {plugin_dir} to see the full output")
    if out.exists():  # a test's stand-in runner may not write it
        _record_inputs(out, inputs)
    log(f"{out.name}: built {what} in {time.monotonic() - started:.1f} s")
    return True


GO_BUILD_DEADLINE_S = 3600  # a cold Nomad build under load takes ~10 min here
PROGRESS_EVERY_S = 20


def _go_build_with_progress(cmd: list[str], cwd: Path, env: dict, name: str, package: str,
                            log: Log) -> subprocess.CompletedProcess:
    """`go build -v` prints each package it compiles: count them against the package's
    dependencies (`go list -deps`) and report every PROGRESS_EVERY_S, under one deadline."""
    import threading

    total = None  # counted at the first report: a build with nothing to do ends before it
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    started = time.monotonic()
    while True:
        try:
            proc.wait(timeout=PROGRESS_EVERY_S)
            break
        except subprocess.TimeoutExpired:
            elapsed = time.monotonic() - started
            if elapsed > GO_BUILD_DEADLINE_S:
                proc.kill()
                proc.wait()
                return subprocess.CompletedProcess(cmd, None, "", "".join(lines) + (
                    f"\nkilled after {GO_BUILD_DEADLINE_S} s (the build's deadline)"))
            if total is None:
                total = _count_deps(cmd[0], package, cwd, env)
            compiled = sum(1 for line in lines if not line.startswith(("#", " ")))
            of = f"/{total}" if total else ""
            log(f"{name}: building, {compiled}{of} packages compiled ({elapsed:.0f} s)")
    reader.join(timeout=10)
    stdout = proc.stdout.read() if proc.stdout else ""
    # -v lists every package on stderr: keep only what is not a package path for errors.
    errors = [line for line in lines if line.startswith(("#", " ")) or ":" in line]
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, "".join(errors))


def _count_deps(go: str, package: str, cwd: Path, env: dict) -> int:
    """How many packages the build compiles at most; 0 (no total shown) if `go list` fails or
    stalls: the progress line must not hold up the build's own deadline."""
    try:
        deps = subprocess.run([go, "list", "-deps", package], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=PROGRESS_EVERY_S)
    except subprocess.TimeoutExpired:
        return 0
    return len(deps.stdout.split()) if deps.returncode == 0 else 0


def go_binary() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go"
                                if os.access("/usr/local/go/bin/go", os.X_OK) else None)
    if go is None:
        raise LabError("go not found on PATH or in /usr/local/go/bin: install the Go version "
                       "named in plugin/go.mod (https://go.dev/doc/install) and put it on PATH")
    return go


# -- versions ---------------------------------------------------------------------------

def write_versions(config, *, run: Runner = subprocess.run) -> dict:
    """Record what was built and with what into build/versions.json, and return it.

    The plugin's version and commit come from its `version` command, else from the stamp
    build_plugin recorded (with -trimpath, `go version -m` does not show -ldflags).
    """
    build_dir = Path(config.build_dir)
    nomad = _first_line(run, [str(build_dir / "nomad"), "version"])
    plugin = _first_line(run, [str(build_dir / PLUGIN_BINARY), "version"])
    stamp = _read_json(build_dir / PLUGIN_STAMP)
    go = _first_line(run, [go_binary(), "version"])
    java = _first_line(run, ["javac", "-version"])
    versions = {
        "nomad": _match(r"v\d+\.\d+\.\d+\S*", nomad) or nomad or "unknown",
        "plugin": _match(r"v\d+\.\d+\.\d+\S*", plugin) or stamp.get("Version", "unknown"),
        "commit": _group(r"commit ([^\s)]+)", plugin) or stamp.get("Commit", "unknown"),
        "go": _match(r"go\d+\.\d+(\.\d+)?", go) or "unknown",
        "java": _match(r"\d+(\.\d+)+\S*", java) or "unknown",
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")
    return versions


def write_versions_if_stale(config, *, run: Runner = subprocess.run) -> dict:
    """write_versions, unless build/versions.json is newer than every binary it describes (it
    starts each binary and javac: ~0.25 s on every lab.up and test run)."""
    build_dir = Path(config.build_dir)
    binaries = [build_dir / "nomad", build_dir / PLUGIN_BINARY, build_dir / SHIM_RELPATH]
    try:
        written = (build_dir / "versions.json").stat().st_mtime_ns
        if all(b.stat().st_mtime_ns <= written for b in binaries):
            return _read_json(build_dir / "versions.json")
    except OSError:
        pass
    return write_versions(config, run=run)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _first_line(run: Runner, cmd: list[str]) -> str:
    """First non-empty output line of cmd, or "" when it is missing or fails."""
    try:
        result = run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if result.returncode != 0:
        return ""
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _match(pattern: str, text: str) -> str:
    found = re.search(pattern, text or "")
    return found.group(0) if found else ""


def _group(pattern: str, text: str) -> str:
    found = re.search(pattern, text or "")
    return found.group(1) if found else ""
