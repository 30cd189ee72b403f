"""The SSH connection to the lab host is re-opened when it drops, and the test goes on."""

import pytest

from lab.remote.host import LabHost


@pytest.mark.exclusive  # nothing else may be using the session's connection when it is cut
def test_a_connection_cut_on_the_lab_host_is_reopened_and_tunnels_come_back(
        lab_host, agent, jobs):
    sleeper = jobs.run("sleeper", args=["forever"])
    sleeper.wait_running()
    before = lab_host.session_pids()
    assert before, "no sshd process found for the session's own connection"

    # Cut it from the lab host's side, as a crashed sshd or a network reset would, through
    # a connection of its own.
    cutter = LabHost(lab_host.spec, name="cutter")
    try:
        cutter.sudo(f"kill -KILL {' '.join(map(str, before))}")
    finally:
        cutter.close()

    # Everything below goes through the cut connection: the agent's API tunnel, the artifact
    # server's reverse tunnel (the hello JAR is downloaded through it) and plain commands.
    hello = jobs.run("hello", args=["after-the-cut"])
    hello.wait_dead()
    assert hello.exit_codes() == [0], hello.event_types()
    assert "arg[0]=after-the-cut" in hello.logs()
    assert sleeper.alloc()["ClientStatus"] == "running"

    after = lab_host.session_pids()
    assert after and not set(after) & set(before), (before, after)
    sleeper.stop()
