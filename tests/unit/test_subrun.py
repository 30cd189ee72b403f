"""subrun: an interrupted parent waits for its child's own clean-up instead of killing it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

CHILD = textwrap.dedent("""
    import signal, sys, time
    def cleanup(*_):
        time.sleep(0.5)  # a teardown that takes a while
        print("child cleaned up", flush=True)
        sys.exit(2)
    signal.signal(signal.SIGINT, cleanup)
    print("child ready", flush=True)
    time.sleep(30)
""")

PARENT = textwrap.dedent("""
    import sys
    from lab.core.subrun import run_forwarding_interrupts
    print("parent rc", run_forwarding_interrupts([sys.executable, "-c", sys.argv[1]]),
          flush=True)
""")


def test_sigint_to_the_parent_alone_reaches_the_child_and_its_clean_up_finishes(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    assert parent.stdout.readline().strip() == "child ready"
    parent.send_signal(signal.SIGINT)
    started = time.monotonic()
    out, _ = parent.communicate(timeout=20)
    assert "child cleaned up" in out, out
    assert "parent rc 2" in out, "the parent returns the child's own exit code"
    assert time.monotonic() - started >= 0.4, "the parent waited for the child's clean-up"
