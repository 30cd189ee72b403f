"""`lab.run-job`: run a human-written HCL job on a fresh agent and show what happened.

The job file's `ARTIFACTS` placeholder becomes the lab artifact server's URL (serving
build/jars/) as seen from the lab host. Nomad itself parses the HCL (/v1/jobs/parse).
"""

from __future__ import annotations

import time
from pathlib import Path

from lab.core.config import LabConfig
from lab.core.errors import LabError
from lab.core.wait import Pending, until
from lab.faults.artifacts import ArtifactServer
from lab.nomad.agent import NomadAgent
from lab.nomad.api import TRANSIENT
from lab.nomad.jobrun import JobRun, summarize_alloc
from lab.provision import target


def run_job(config: LabConfig, path: Path, wait_s: float = 0, out=print) -> None:
    hcl = path.read_text()
    with target.leased(config, "invoke lab.run-job", out, check_ready=True) as host, \
            ArtifactServer() as server:
        for jar in (config.build_dir / "jars").glob("*.jar"):
            server.add(jar.name, jar)
        with server.expose(host) as exposed:
            agent = NomadAgent(host, config.run_id, 1, ready_timeout=config.timeout("agent_ready"),
                               stop_timeout=config.timeout("agent_stop")).start()
            try:
                _run(agent, config, hcl.replace("ARTIFACTS", exposed.url("").rstrip("/")),
                     wait_s, out)
            finally:
                problems = agent.drain()
                agent.stop(check=False)
                for problem in problems:
                    out(f"cleanup: {problem}")


def _run(agent: NomadAgent, config: LabConfig, hcl: str, wait_s: float, out) -> None:
    try:
        job = agent.api.client.jobs.parse(hcl)
    except Exception as exc:  # python-nomad raises its own types; show Nomad's answer
        raise LabError(f"Nomad could not parse the job: {getattr(exc, 'nomad_resp', exc)}") \
            from None
    run = JobRun(agent.api, {"Job": job}, config.timeout).submit()
    out(f"submitted {run.id} to agent {agent.id}")
    if job.get("Type") == "service":
        run.wait_running()
        if wait_s:
            deadline = time.monotonic() + wait_s
            until(lambda: time.monotonic() >= deadline or Pending("running"), wait_s + 5,
                  f"{run.id} to run for {wait_s}s", retry_on=TRANSIENT)
        run.stop()
    run.wait_alloc_terminal()
    alloc = run.alloc()
    out(summarize_alloc(alloc))
    for task in alloc.get("TaskStates") or {}:
        for event in run.events(task):
            out(f"  {task} event: {event['Type']}: {event.get('DisplayMessage', '')}")
        out(f"--- {task} stdout\n{run.logs(task)}--- {task} stderr\n{run.logs(task, 'stderr')}")
