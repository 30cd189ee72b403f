"""KVM/TCG decision: console judgement, override, cache, announcement (no QEMU is started)."""

from __future__ import annotations

import pytest

from lab.provision import accel


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    monkeypatch.setattr(accel, "qemu_version", lambda qemu=accel.QEMU: "QEMU emulator 7.2")
    k, i = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    k.write_bytes(b"kernel-1")
    i.write_bytes(b"initrd")
    return k, i


def test_console_past_the_boot_stub_means_kvm():
    ok, why = accel.judge_console("Probing EDD ... ok\n[0.0] Linux version 6.1\n"
                                  "[1.2] Run /init as init process\n", False, None)
    assert ok and "Run /init" in why


def test_hang_after_probing_edd_means_tcg():
    ok, why = accel.judge_console("Probing EDD (edd=off to disable)... ok\n", False, None)
    assert not ok and why == "KVM present but cannot boot the box: hung after 'Probing EDD'"


def test_qemu_crash_means_tcg_and_says_why():
    ok, why = accel.judge_console("qemu: kvm_buf_set_msrs: Assertion failed", True, -6)
    assert not ok and "exited -6" in why and "kvm_buf_set_msrs" in why


def test_override_skips_the_probe(kernel, tmp_path):
    lines = []
    got = accel.detect_accel(*kernel, tmp_path, env={"LAB_ACCEL": "KVM"},
                             probe=_no_probe, out=lines.append)
    assert (got.name, got.timeout_scale, got.source) == ("kvm", 1.0, "LAB_ACCEL")
    assert lines == ["accel: kvm (forced; LAB_ACCEL)"]
    with pytest.raises(accel.AccelError, match="use 'kvm' or 'tcg'"):
        accel.detect_accel(*kernel, tmp_path, env={"LAB_ACCEL": "hvf"}, probe=_no_probe)


def test_probe_once_then_cached(kernel, tmp_path):
    probes = []

    def probe(k, i):
        probes.append(k)
        return False, "KVM present but cannot boot the box: hung after 'Probing EDD'"

    lines = []
    first = accel.detect_accel(*kernel, tmp_path, env={}, probe=probe, out=lines.append)
    second = accel.detect_accel(*kernel, tmp_path, env={}, probe=probe, out=lines.append)
    assert len(probes) == 1
    assert first.name == second.name == "tcg" and second.timeout_scale == 4.0
    assert second.source.startswith("cached in ") and str(tmp_path / "accel") in second.source
    assert lines[-1].startswith("accel: tcg (KVM present but cannot boot the box: hung after "
                                "'Probing EDD'; cached in ")


def test_cache_key_follows_the_kernel(kernel, tmp_path):
    k, i = kernel
    before = accel.cache_key(k, "QEMU 7.2", "6.1.0")
    assert accel.cache_key(k, "QEMU 8.0", "6.1.0") != before
    assert accel.cache_key(k, "QEMU 7.2", "6.12.0") != before
    k.write_bytes(b"kernel-2")
    assert accel.cache_key(k, "QEMU 7.2", "6.1.0") != before


def test_no_dev_kvm_is_tcg_without_starting_qemu(kernel, monkeypatch):
    monkeypatch.setattr(accel.os, "access", lambda path, mode: False)
    monkeypatch.setattr(accel.subprocess, "Popen", _no_probe)
    assert accel.probe_kvm(*kernel) == (False, "no usable /dev/kvm")


def _no_probe(*args, **kwargs):
    raise AssertionError("must not probe")
