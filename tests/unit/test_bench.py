"""bench: the agent log's timeline and the medians the report prints."""

from __future__ import annotations

from lab.workflows import bench

AGENT_LOG = """==> Loaded configuration from /var/lib/nomad-lab/x/agent.hcl
==> Starting Nomad agent...
    2026-11-29T18:40:01.100Z [INFO]  nomad: raft: initial configuration: index=1
2026-11-29T18:40:02.350Z [INFO]  nomad: cluster leadership acquired
2026-11-29T18:40:02.900Z [INFO]  client: node registration complete
2026-11-29T18:40:03.050Z [DEBUG] client.driver_mgr: driver=java-crun health=healthy
2026-11-29T18:40:09.000Z [INFO]  client: node registration complete
"""


def test_log_timeline_reads_each_mark_once_relative_to_the_first_timestamp():
    assert bench.log_timeline(AGENT_LOG) == {"leader": 1.25, "node_registered": 1.8,
                                             "driver_healthy": 1.95}


def test_log_timeline_of_an_empty_or_foreign_log_is_empty():
    assert bench.log_timeline("") == {}
    assert bench.log_timeline("no timestamps here\n") == {}


def test_median_steps_keep_the_timeline_order_and_skip_missing_samples():
    samples = [{"driver_healthy": 3.0, "leader": 1.0}, {"leader": 2.0, "driver_healthy": 5.0},
               {"leader": 9.0}]
    assert list(bench._median_steps(samples).items()) == [("leader", 2.0),
                                                          ("driver_healthy", 4.0)]


def test_steps_parse_the_scripts_step_lines():
    assert bench._steps("step 12 http_listening\nnoise\nstep 3400 driver_healthy\n") == {
        "http_listening": 0.012, "driver_healthy": 3.4}
