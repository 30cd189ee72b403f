"""config: defaults < invoke.yaml < LAB_* environment < overrides; errors that say the fix."""

from __future__ import annotations

import json

import pytest
import yaml

from lab.core.config import DEFAULT_TIMEOUTS, ROOT, TCG_TIMEOUT_SCALE, LabConfig
from lab.core.errors import LabError


@pytest.fixture
def yaml_file(tmp_path):
    def write(section: dict | None) -> object:
        path = tmp_path / "invoke.yaml"
        path.write_text(yaml.safe_dump({"lab": section}))
        return path

    return write


def load(yaml_path, env=None, overrides=None) -> LabConfig:
    return LabConfig.load(overrides, env=env or {}, yaml_path=yaml_path)


def test_defaults_without_yaml_or_environment(tmp_path):
    config = load(tmp_path / "absent.yaml")
    assert (config.target, config.accel, config.timeout_scale) == ("vagrant", "auto", "auto")
    assert (config.cpus, config.memory_mb, config.keep) == (2, 4096, False)
    assert config.timeouts == DEFAULT_TIMEOUTS
    assert config.timeouts is not DEFAULT_TIMEOUTS


@pytest.mark.parametrize("layers, expected", [
    ({}, 2),
    ({"yaml": 3}, 3),
    ({"yaml": 3, "env": "4"}, 4),
    ({"yaml": 3, "env": "4", "override": 5}, 5),
    ({"env": "4", "override": None}, 4),  # an unset option (None) does not override
    ({"yaml": 3, "override": 6}, 6),
])
def test_precedence(yaml_file, layers, expected):
    path = yaml_file({"cpus": layers["yaml"]} if "yaml" in layers else {})
    env = {"LAB_CPUS": layers["env"]} if "env" in layers else {}
    overrides = {"cpus": layers["override"]} if "override" in layers else None
    config = load(path, env, overrides)
    assert config.cpus == expected and isinstance(config.cpus, int)


def test_timeouts_merge_defaults_yaml_and_lab_timeout_env(yaml_file):
    path = yaml_file({"timeouts": {"job": 10, "event": 11}})
    config = load(path, env={"LAB_TIMEOUT_EVENT": "12", "LAB_TIMEOUT_AGENT_READY": "13.5",
                             "LAB_TIMEOUT_SCALE": "2"})
    assert config.timeouts == {**DEFAULT_TIMEOUTS, "job": 10.0, "event": 12.0,
                               "agent_ready": 13.5}
    assert "scale" not in config.timeouts, "LAB_TIMEOUT_SCALE is the scale, not a timeout"
    assert config.timeout_scale == 2.0
    assert config.timeout("agent_ready") == 27.0


def test_unknown_lab_environment_variables_are_ignored(tmp_path):
    config = load(tmp_path / "absent.yaml", env={"LAB_DEBIAN_MIRROR": "x", "LABX": "y"})
    assert config.target == "vagrant"


def test_unknown_setting_names_the_key_the_file_and_the_valid_ones(yaml_file):
    path = yaml_file({"cpu": 4})
    with pytest.raises(LabError) as info:
        load(path)
    msg = str(info.value)
    assert "['cpu']" in msg and str(path) in msg
    assert "valid ones are" in msg and "'cpus'" in msg and "'timeout_scale'" in msg


def test_unknown_override_is_an_error_too(tmp_path):
    with pytest.raises(LabError, match=r"unknown lab setting\(s\) \['bogus'\]"):
        load(tmp_path / "absent.yaml", overrides={"bogus": 1})


@pytest.mark.parametrize("settings, fix", [
    ({"target": "vagrnt"}, "use 'vagrant' or ssh://user@host[:port]"),
    ({"target": "root@lab.invalid"}, "LAB_TARGET=ssh://"),
    ({"accel": "hvf"}, "not one of auto, kvm, tcg"),
    ({"timeout_scale": "fast"}, "must be 'auto' or a positive number, e.g. LAB_TIMEOUT_SCALE=2"),
    ({"timeout_scale": "0"}, "positive number"),
    ({"timeout_scale": -1}, "positive number"),
])
def test_bad_values_say_the_fix(yaml_file, settings, fix):
    with pytest.raises(LabError) as info:
        load(yaml_file(settings))
    assert fix in str(info.value)


@pytest.mark.parametrize("raw, keep", [("1", True), ("true", True), ("YES", True),
                                       ("0", False), ("false", False), ("", False)])
def test_keep_from_environment(tmp_path, raw, keep):
    assert load(tmp_path / "absent.yaml", env={"LAB_KEEP": raw}).keep is keep


def write_accel(root, accel):
    (root / ".lab").mkdir(exist_ok=True)
    (root / ".lab" / "accel.json").write_text(json.dumps({"accel": accel}))


@pytest.mark.parametrize("target, accel_setting, cached, scale", [
    ("vagrant", "auto", "tcg", TCG_TIMEOUT_SCALE),
    ("vagrant", "auto", "kvm", 1.0),
    ("vagrant", "auto", None, TCG_TIMEOUT_SCALE),  # not detected yet: assume the slow case
    ("vagrant", "auto", "garbage", TCG_TIMEOUT_SCALE),
    ("vagrant", "kvm", "tcg", 1.0),  # an explicit accel beats the cached detection
    ("vagrant", "tcg", "kvm", TCG_TIMEOUT_SCALE),
    ("ssh://root@127.0.0.1:2222", "auto", "tcg", 1.0),  # bare metal is never emulated
])
def test_auto_scale(tmp_path, target, accel_setting, cached, scale):
    if cached == "garbage":
        (tmp_path / ".lab").mkdir()
        (tmp_path / ".lab" / "accel.json").write_text("{not json")
    elif cached:
        write_accel(tmp_path, cached)
    config = LabConfig(root=tmp_path, target=target, accel=accel_setting)._validated()
    assert config.scale == scale
    assert config.timeout("job") == DEFAULT_TIMEOUTS["job"] * scale


def test_explicit_scale_wins_over_tcg(tmp_path):
    write_accel(tmp_path, "tcg")
    config = LabConfig(root=tmp_path).with_overrides(timeout_scale="1.5")
    assert config.scale == 1.5
    assert config.timeout("agent_ready") == DEFAULT_TIMEOUTS["agent_ready"] * 1.5


def test_unknown_timeout_names_the_known_ones(tmp_path):
    with pytest.raises(LabError) as info:
        LabConfig(root=tmp_path).timeout("agent_redy")
    assert "'agent_redy'" in str(info.value) and "'agent_ready'" in str(info.value)


def test_with_overrides_validates_and_leaves_the_original_alone(tmp_path):
    base = LabConfig(root=tmp_path)
    changed = base.with_overrides(target="ssh://dev@127.0.0.1:2200", cpus="4")
    assert (changed.target, changed.cpus, changed.run_id) == (
        "ssh://dev@127.0.0.1:2200", 4, base.run_id)
    assert base.target == "vagrant"
    with pytest.raises(LabError, match="not understood"):
        base.with_overrides(target="docker")


def test_derived_paths_follow_root_and_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = LabConfig(root=tmp_path)
    assert config.build_dir == tmp_path / "build"
    assert config.state_dir == tmp_path / ".lab"
    assert config.reports_dir == tmp_path / "reports"
    assert config.cache_dir == tmp_path / "cache" / "nomad-lab"
    assert config.is_vagrant and not config.with_overrides(target="ssh://h").is_vagrant


def test_each_load_gets_a_fresh_run_id(tmp_path):
    ids = {load(tmp_path / "absent.yaml").run_id for _ in range(5)}
    assert len(ids) == 5 and all(len(i) == 6 for i in ids)


def test_empty_yaml_and_empty_lab_section_mean_defaults(tmp_path):
    for text in ("", "lab:\n", "other: 1\n"):
        path = tmp_path / "invoke.yaml"
        path.write_text(text)
        assert load(path).timeouts == DEFAULT_TIMEOUTS


def test_the_checked_in_invoke_yaml_is_valid_and_agrees_with_the_defaults():
    """invoke.yaml documents the defaults: it must load and not drift from config.py."""
    config = LabConfig.load(env={})
    raw = yaml.safe_load((ROOT / "invoke.yaml").read_text())["lab"]
    assert {k: float(v) for k, v in raw["timeouts"].items()} == DEFAULT_TIMEOUTS
    assert config.timeouts == DEFAULT_TIMEOUTS
    assert config.target == "vagrant"


@pytest.mark.parametrize("env, message", [
    ({"LAB_TIMEOUT_JOB": "abc"}, "timeout job 'abc' is not a number: e.g. LAB_TIMEOUT_JOB=120"),
    ({"LAB_CPUS": "two"}, "cpus 'two' is not a number: e.g. LAB_CPUS=2"),
    ({"LAB_MEMORY_MB": "4G"}, "memory_mb '4G' is not a number: e.g. LAB_MEMORY_MB=4096"),
])
def test_non_numbers_name_the_setting_and_an_example(tmp_path, env, message):
    with pytest.raises(LabError) as info:
        load(tmp_path / "absent.yaml", env=env)
    assert str(info.value) == message


def test_root_from_the_environment_is_a_path(tmp_path):
    config = load(tmp_path / "absent.yaml", env={"LAB_ROOT": str(tmp_path)})
    assert config.build_dir == tmp_path / "build"


def test_several_targets_bind_each_xdist_worker_to_one_host_in_turn():
    config = LabConfig.load({"targets": "vagrant, ssh://root@127.0.0.1:2222"}, env={})
    assert config.target == "vagrant"
    assert config.target_list == ["vagrant", "ssh://root@127.0.0.1:2222"]
    assert [config.for_worker(w).target for w in ("gw0", "gw1", "gw2", "gw3")] == \
        ["vagrant", "ssh://root@127.0.0.1:2222"] * 2
    bound = config.for_worker("gw1")
    assert bound.target_list == ["ssh://root@127.0.0.1:2222"] and bound.run_id == config.run_id
    assert config.for_worker(None) is config  # the controller keeps the list
    single = LabConfig.load({}, env={"LAB_TARGET": "ssh://root@h:22"})
    assert single.for_worker("gw3").target == "ssh://root@h:22"


def test_a_target_list_with_a_bad_or_repeated_host_is_refused_naming_it():
    with pytest.raises(LabError, match="target 'ftp://h' is not understood"):
        LabConfig.load({"targets": "vagrant,ftp://h"}, env={})
    with pytest.raises(LabError, match="name one lab host twice"):
        LabConfig.load({}, env={"LAB_TARGETS": "vagrant,vagrant"})
