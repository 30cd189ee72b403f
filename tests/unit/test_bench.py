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


def test_idle_cpu_command_gives_the_units_cpu_share_over_its_window(tmp_path):
    import subprocess

    stat = tmp_path / "system.slice" / "a.service" / "cpu.stat"
    stat.parent.mkdir(parents=True)
    stat.write_text("usage_usec 100000\nuser_usec 1\n")
    # 0.5 s of CPU used during a 1 s window: 50 % of one CPU (a little less: the window
    # is measured, and is a little longer than the sleep).
    writer = subprocess.Popen(["sh", "-c", f"sleep 0.3; echo 'usage_usec 600000' > {stat}"])
    out = subprocess.run(["bash", "-c", bench.idle_cpu_command("a.service", 1, str(tmp_path))],
                         capture_output=True, text=True, check=True).stdout
    writer.wait()
    assert 40 <= float(out) <= 50, out


def test_quiet_command_says_quiet_on_an_idle_host_and_busy_at_its_deadline(tmp_path):
    import subprocess

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 5000 0 0 0 0 0 0\n")  # unchanging: nothing ran, "idle"
    quiet = subprocess.run(["bash", "-c", bench.quiet_command(5, 0.1, str(stat))],
                           capture_output=True, text=True, check=True).stdout.split()
    assert quiet[0] == "quiet" and 400 <= int(quiet[1]) < 3000, quiet
    # A writer makes every interval 50 % busy (user +50, idle +50 per 0.1 s).
    writer = subprocess.Popen(["bash", "-c", f"u=100; i=5000; while :; do u=$((u+50)); "
                               f"i=$((i+50)); echo \"cpu  $u 0 100 $i 0 0 0 0 0 0\" > {stat}; "
                               "sleep 0.1; done"])
    try:
        busy = subprocess.run(["bash", "-c", bench.quiet_command(1, 0.1, str(stat))],
                              capture_output=True, text=True, check=True).stdout.split()
    finally:
        writer.kill()
    assert busy[0] == "busy" and 40 <= int(busy[1]) <= 60, busy


def test_idle_cpu_command_fails_without_a_usage_figure(tmp_path):
    import subprocess

    # No cgroup v2 file for the unit: an error, not a silent 0.0.
    res = subprocess.run(["bash", "-c", bench.idle_cpu_command("gone.service", 0, str(tmp_path))],
                         capture_output=True, text=True)
    assert res.returncode != 0 and res.stdout == "", (res.returncode, res.stdout)
