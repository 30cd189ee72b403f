"""The job builders the operator e2e tests use (lab.nomad.jobs): group networks, host
volumes and their mounts, reserved cores, and the agent option for a node's CPU compute."""

from __future__ import annotations

import pytest

from lab.nomad import jobs
from lab.nomad.agent import AgentOptions, render_config
from tests.unit.test_agent import PORTS, parse_hcl


def test_group_network_maps_each_port_label_to_its_port_in_the_namespace():
    network = jobs.group_network("bridge", ports={"http": 8080},
                                 dns=jobs.dns_config(["127.0.0.77"], ["lab.internal"]))
    assert network == {"Mode": "bridge", "DynamicPorts": [{"Label": "http", "To": 8080}],
                       "DNS": {"Servers": ["127.0.0.77"], "Searches": ["lab.internal"],
                               "Options": []}}
    assert jobs.group_network("none") == {"Mode": "none"}
    with pytest.raises(ValueError, match="network mode 'cni'"):
        jobs.group_network("cni")


def test_java_job_puts_network_and_volumes_on_its_group_and_mounts_on_the_task():
    task = jobs.java_task("app", "http://x/opsprobe.jar",
                          volume_mounts=[jobs.volume_mount("data", "/data"),
                                         jobs.volume_mount("ro", "/ro", read_only=True)])
    job = jobs.java_job("lab-x-y-0000", [task], network=jobs.group_network("host"),
                        volumes={"data": jobs.host_volume("data"),
                                 "ro": jobs.host_volume("ro", read_only=True)})
    group = job["Job"]["TaskGroups"][0]
    assert group["Networks"] == [{"Mode": "host"}]
    assert group["Volumes"] == {
        "data": {"Name": "data", "Type": "host", "Source": "data", "ReadOnly": False},
        "ro": {"Name": "ro", "Type": "host", "Source": "ro", "ReadOnly": True}}
    assert group["Tasks"][0]["VolumeMounts"] == [
        {"Volume": "data", "Destination": "/data", "ReadOnly": False},
        {"Volume": "ro", "Destination": "/ro", "ReadOnly": True}]
    plain = jobs.java_job("lab-x-y-0001", [jobs.java_task("app", "http://x/a.jar")])
    assert "Networks" not in plain["Job"]["TaskGroups"][0]
    assert "VolumeMounts" not in plain["Job"]["TaskGroups"][0]["Tasks"][0]


def test_cores_replace_cpu_because_nomad_takes_only_one_of_them():
    assert jobs.java_task("app", "http://x/a.jar", cores=1)["Resources"] == {
        "Cores": 1, "MemoryMB": 256}
    assert jobs.java_task("app", "http://x/a.jar", cpu=300)["Resources"] == {
        "CPU": 300, "MemoryMB": 256}


def test_agent_cpu_total_compute_is_rendered_only_when_set():
    def client(options):
        return parse_hcl(render_config("a", "/d", PORTS, options))["client"]

    assert client(AgentOptions(cpu_total_compute=400000))["cpu_total_compute"] == 400000
    assert "cpu_total_compute" not in client(AgentOptions())
