"""`invoke bench`: the lab's speed figures, printed and written to reports/bench.json.

lab.up (warm, or cold after destroying the VM), agent start-to-ready and teardown, and job
register-to-exit for the hello JAR next to a bare `crun run` of the same JAR on the lab host.
"""

from __future__ import annotations

import json
import statistics
import time

from lab import target
from lab.agent import NomadAgent
from lab.artifacts import ArtifactServer
from lab.config import LabConfig
from lab.jobrun import JobRun
from lab.jobs import java_job, java_task
from lab.push import JAR_DIR
from lab.up import up

# A bare OCI bundle like the driver's (read-only host binds), made with `crun spec` + jq.
BARE_CRUN = r"""
set -e
b=$(mktemp -d /tmp/lab-bench-XXXX); mkdir $b/rootfs; cd $b
crun spec
jh=$(dirname $(dirname $(readlink -f $(command -v java))))
jq --arg jh "$jh" --arg jars "{jars}" '
  .root = {{path: "rootfs", readonly: true}} |
  .process.terminal = false | .process.args = ["java", "-Xshare:auto", "-jar", "/jars/hello.jar"] |
  .process.env += ["PATH=/usr/bin:/bin:" + $jh + "/bin"] |
  .linux.namespaces = [{{type:"pid"}},{{type:"mount"}},{{type:"ipc"}},{{type:"uts"}}] |
  del(.linux.uidMappings, .linux.gidMappings) |
  .mounts += [
    {{destination:"/usr", type:"bind", source:"/usr", options:["rbind","ro"]}},
    {{destination:"/lib", type:"bind", source:"/lib", options:["rbind","ro"]}},
    {{destination:"/lib64", type:"bind", source:"/lib64", options:["rbind","ro"]}},
    {{destination:"/bin", type:"bind", source:"/bin", options:["rbind","ro"]}},
    {{destination:"/etc", type:"bind", source:"/etc", options:["rbind","ro"]}},
    {{destination:"/jars", type:"bind", source:$jars, options:["rbind","ro"]}}]
' config.json > c.json && mv c.json config.json
s=$(date +%s.%N); crun --root /run/lab-bench run lab-bench-$$ >/dev/null; e=$(date +%s.%N)
cd /; rm -rf $b
awk -v s=$s -v e=$e 'BEGIN {{ printf "%.3f\n", e - s }}'
"""


def run(config: LabConfig, cold: bool = False, rounds: int = 3, out=print) -> dict:
    results: dict = {"accel": config.effective_accel(), "timeout_scale": config.scale}
    if cold and config.is_vagrant:
        from lab.vm import VagrantVM

        VagrantVM(config, out=out).destroy()
    steps = up(config, out=out)
    results["lab_up"] = {"total_s": round(steps.total, 1),
                         **{k: round(v, 1) for k, v in steps.timings.items()},
                         "kind": "cold (VM destroyed first)" if cold else "warm"}
    with target.exclusive(config, out):
        _measure_lab_host(config, rounds, results, out)
    config.reports_dir.mkdir(exist_ok=True)
    (config.reports_dir / "bench.json").write_text(json.dumps(results, indent=2))
    out(json.dumps(results, indent=2))
    return results


def _measure_lab_host(config: LabConfig, rounds: int, results: dict, out) -> None:
    host = target.connect(config)
    bare = [float(host.sudo(BARE_CRUN.format(jars=JAR_DIR), timeout=120).stdout.strip())
            for _ in range(rounds)]
    results["bare_crun_run_hello_s"] = _stats(bare)
    starts, stops, jobs = [], [], []
    with ArtifactServer() as server:
        server.add("hello.jar", config.build_dir / "jars" / "hello.jar")
        with server.expose(host) as exposed:
            for i in range(rounds):
                agent = NomadAgent(host, config.run_id, 100 + i,
                                   ready_timeout=config.timeout("agent_ready"),
                                   stop_timeout=config.timeout("agent_stop"))
                t = time.monotonic()
                agent.start()
                starts.append(time.monotonic() - t)
                job = java_job(f"lab-{config.run_id}-bench-{i}",
                               [java_task("app", exposed.url("hello.jar"))])
                t = time.monotonic()
                JobRun(agent.api, job, config.timeout).submit().wait_dead()
                jobs.append(time.monotonic() - t)
                t = time.monotonic()
                agent.drain()
                agent.stop()
                stops.append(time.monotonic() - t)
    results["agent_start_to_ready_s"] = _stats(starts)
    results["agent_teardown_s"] = _stats(stops)
    results["job_register_to_exit_hello_s"] = _stats(jobs)


def _stats(samples: list[float]) -> dict:
    return {"median": round(statistics.median(samples), 2), "min": round(min(samples), 2),
            "max": round(max(samples), 2), "n": len(samples)}
