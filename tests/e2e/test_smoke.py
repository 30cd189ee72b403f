"""The whole path in one test: artifact over SSH -> Nomad -> plugin -> crun -> java -> logs."""


def test_hello_jar_runs_and_its_output_comes_back_through_the_logs_api(jobs):
    run = jobs.run("hello", args=["smoke-arg"])

    run.wait_dead()

    assert run.exit_codes() == [0], run.event_types()
    stdout = run.logs(stream="stdout")
    assert "hello from java-crun" in stdout
    assert "arg[0]=smoke-arg" in stdout
    assert "hello on stderr" in run.logs(stream="stderr")
