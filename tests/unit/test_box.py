"""Box cache: mirror from apt sources, hash of the inputs, install record, no-op when added."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lab.provision import box

DEB822 = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""

THIRD_PARTY = """\
Types: deb
URIs: https://repo.vendor.example/node
Suites: nodistro
Components: main
"""


def apt_dir(tmp_path: Path, sources: dict[str, str], sources_list: str = "") -> Path:
    d = tmp_path / "apt"
    (d / "sources.list.d").mkdir(parents=True)
    (d / "sources.list").write_text(sources_list)
    for name, text in sources.items():
        (d / "sources.list.d" / name).write_text(text)
    return d


def test_mirror_from_deb822_skips_security_and_third_party(tmp_path, monkeypatch):
    monkeypatch.delenv("LAB_DEBIAN_MIRROR", raising=False)
    d = apt_dir(tmp_path, {"a-node.sources": THIRD_PARTY, "debian.sources": DEB822})
    assert box.debian_mirror(d) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources_list(tmp_path, monkeypatch):
    monkeypatch.delenv("LAB_DEBIAN_MIRROR", raising=False)
    d = apt_dir(tmp_path, {}, "deb http://sec.example/debian-security bookworm-security main\n"
                              "deb [arch=amd64] http://one.example/debian bookworm main contrib\n")
    assert box.debian_mirror(d) == "http://one.example/debian"


def test_mirror_override_and_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DEBIAN_MIRROR", "http://override.example/debian")
    assert box.debian_mirror(tmp_path) == "http://override.example/debian"
    monkeypatch.delenv("LAB_DEBIAN_MIRROR")
    with pytest.raises(box.BoxError, match="LAB_DEBIAN_MIRROR"):
        box.debian_mirror(apt_dir(tmp_path, {"x.sources": THIRD_PARTY}))


def test_packages_pick_the_release_jre():
    assert "openjdk-17-jre-headless" in box.box_packages("bookworm")
    assert "openjdk-11-jre-headless" in box.box_packages("bullseye")
    assert "openjdk-21-jre-headless" in box.box_packages("trixie")
    with pytest.raises(box.BoxError, match="unknown Debian release 'sarge'"):
        box.box_packages("sarge")


def test_hash_changes_with_every_input():
    base = dict(script=b"s", packages=["a"], release="bookworm", pubkey="k", user="lab",
                disk_gb=8)
    digest = box.box_hash(**base)
    assert digest == box.box_hash(**base)
    for change in (dict(script=b"t"), dict(packages=["a", "b"]), dict(release="trixie"),
                   dict(pubkey="k2"), dict(user="vagrant"), dict(disk_gb=9)):
        assert box.box_hash(**{**base, **change}) != digest, change


def test_cache_dir_honours_config_then_xdg(tmp_path, monkeypatch):
    class Config:
        cache_dir = tmp_path / "c"
    assert box.lab_cache_dir(Config()) == tmp_path / "c"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert box.lab_cache_dir() == tmp_path / "xdg" / "nomad-lab"


def test_is_box_added_reads_the_record(tmp_path):
    name = box.box_name("bookworm", "abc123")
    assert name == "nomad-lab/debian-bookworm-abc123"
    assert not box.is_box_added(name, "abc123", tmp_path)
    d = box.installed_box_dir(name, tmp_path)
    assert d == tmp_path / "boxes" / "nomad-lab-VAGRANTSLASH-debian-bookworm-abc123/0/libvirt"
    d.mkdir(parents=True)
    (d / "lab-box.json").write_text(json.dumps({"box_hash": "other"}))
    assert not box.is_box_added(name, "abc123", tmp_path)
    (d / "lab-box.json").write_text(json.dumps({"box_hash": "abc123"}))
    assert box.is_box_added(name, "abc123", tmp_path)


def test_ensure_box_is_a_no_op_when_added(tmp_path, monkeypatch):
    """With the current hash already added, nothing is built or run (only files are read)."""
    cache, home = tmp_path / "cache", tmp_path / "vagrant"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("VAGRANT_HOME", str(home))
    key = cache / "ssh" / "id_ed25519"
    key.parent.mkdir(parents=True)
    key.write_text("private")
    key.with_suffix(".pub").write_text("ssh-ed25519 AAAA lab")

    class Config:
        cache_dir = cache
        box_release = "bookworm"

    digest = box.box_hash(box.BUILD_SCRIPT.read_bytes(), box.box_packages("bookworm"),
                          "bookworm", "ssh-ed25519 AAAA lab", box.BOX_USER, box.DISK_GB)
    installed = box.installed_box_dir(box.box_name("bookworm", digest), home)
    installed.mkdir(parents=True)
    (installed / "lab-box.json").write_text(json.dumps({"box_hash": digest}))

    def boom(*a, **k):
        raise AssertionError("must not build or run anything")
    monkeypatch.setattr(box, "_build", boom)
    monkeypatch.setattr(box, "_vagrant_box_add", boom)
    got = box.ensure_box(Config(), out=lambda _: None)
    assert got.hash == digest
    # The cache dir has no kernel (wiped): Vagrant's copy is used.
    assert got.kernel == installed / "vmlinuz"


def test_ensure_box_builds_then_adds_when_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path / "vagrant"))
    calls = []
    monkeypatch.setattr(box, "ensure_ssh_key", lambda cache: _fake_key(cache))
    monkeypatch.setattr(box, "_build", lambda b, *a: calls.append(("build", b.name)))
    monkeypatch.setattr(box, "_vagrant_box_add", lambda name, f, out: calls.append(("add", name)))

    class Config:
        cache_dir = tmp_path / "cache"
    got = box.ensure_box(Config(), "trixie", out=lambda _: None)
    assert calls == [("build", got.name), ("add", got.name)]
    assert got.name.startswith("nomad-lab/debian-trixie-")


def _fake_key(cache: Path) -> Path:
    key = cache / "ssh" / "id_ed25519"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text("k")
    key.with_suffix(".pub").write_text("ssh-ed25519 BBBB lab")
    return key


def test_failed_phase_shows_the_log_tail(tmp_path):
    script = tmp_path / "fail.sh"
    script.write_text('echo "E: Couldn\'t download packages: crun"; exit 3\n')
    log = tmp_path / "build.log"
    log.write_text("")
    seen = []
    with pytest.raises(box.BoxError) as err:
        box._run_phase("debootstrap", {"PATH": "/usr/bin:/bin"}, log, seen.append, script=script)
    msg = str(err.value)
    assert "phase 'debootstrap' failed (exit 3)" in msg
    assert "Couldn't download packages: crun" in msg and str(log) in msg
    assert any("E: Couldn't download" in line for line in seen)  # streamed as it happened


def test_prune_keeps_current_other_releases_and_used_volumes(tmp_path, monkeypatch):
    home, cache = tmp_path / "vh", tmp_path / "cache"
    monkeypatch.setenv("VAGRANT_HOME", str(home))
    for name in ("debian-bookworm-new", "debian-bookworm-old", "debian-bookworm-older",
                 "debian-trixie-abc"):
        (home / "boxes" / f"nomad-lab-VAGRANTSLASH-{name}" / "0" / "libvirt").mkdir(parents=True)
    for d in ("bookworm-new", "bookworm-old", "bookworm-older", "trixie-abc"):
        (cache / "boxes" / d).mkdir(parents=True)
    vol = "nomad-lab-VAGRANTSLASH-debian-{}_vagrant_box_image_0_{}_box.img".format
    volumes = ["nomad-lab-aaaa.img", vol("bookworm-new", 2), vol("bookworm-old", 1),
               vol("bookworm-older", 0), vol("trixie-abc", 3)]
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        if cmd[:2] == ["vagrant", "box"]:
            return subprocess.CompletedProcess(cmd, 0, "", "")
        verb = cmd[3]
        out = ""
        if verb == "vol-list":
            out = " Name Path\n----\n" + "".join(f" {v} /images/{v}\n" for v in volumes)
        elif verb == "vol-dumpxml" and cmd[-1] == "nomad-lab-aaaa.img":
            # another checkout's VM still runs on the old box
            out = f"<volume><backingStore>\n<path>/images/{vol('bookworm-old', 1)}</path>"
        return subprocess.CompletedProcess(cmd, 0, out, "")

    keep = box.Box("nomad-lab/debian-bookworm-new", "bookworm", "new", Path("x"), Path("k"),
                   Path("i"))
    removed = box.prune_old_boxes(keep, cache, out=lambda _: None, run=run)
    # The old box backs another checkout's (or lab's) VM: its box and cache stay, so that
    # VM's next `up` finds its box instead of rebuilding it; the unused older one goes.
    box_removals = [c[-1] for c in calls if c[:3] == ["vagrant", "box", "remove"]]
    assert box_removals == ["nomad-lab/debian-bookworm-older"]
    assert (cache / "boxes" / "bookworm-old").exists()
    assert not (cache / "boxes" / "bookworm-older").exists()
    assert (cache / "boxes" / "bookworm-new").exists() and (cache / "boxes" / "trixie-abc").exists()
    deleted = [c[-1] for c in calls if "vol-delete" in c]
    assert deleted == [vol("bookworm-older", 0)]
    assert len(removed) == 3
