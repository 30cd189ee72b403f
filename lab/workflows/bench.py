"""`invoke bench`: where the lab's time goes, printed and written to reports/bench.json.

Two timelines, each step in seconds, next to the anchors measured in the same run on the same
lab host:
- one agent start: process launch -> HTTP listening -> leader -> node registered -> node ready
  -> driver healthy, as the harness sees it (agent-start.sh) and as the agent's log says;
  anchor: a stock `nomad agent -dev` with the plugin (bare-agent.sh), launch to driver healthy;
- one job of the hello JAR: register -> placed -> artifact downloaded -> task started -> first
  output -> exit -> seen dead; anchor: a bare `crun run` of the same JAR.
Times from the lab host's clock (events, first output) are moved onto this machine's clock
with the offset measured over SSH (its uncertainty, half a round trip, is reported).
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from datetime import datetime

from lab.core.config import LabConfig
from lab.core.errors import LabError
from lab.faults.artifacts import ArtifactServer
from lab.nomad.agent import STEPS, NomadAgent
from lab.nomad.jobrun import JobRun
from lab.nomad.jobs import java_job, java_task
from lab.provision import target
from lab.remote.host import LabHost
from lab.remote.layout import DRIVER, JAR_DIR, NOMAD_BIN, PLUGIN_BINARY, PLUGIN_DIR
from lab.workflows import harness
from lab.workflows.up import up

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
# What the agent's own log says, and when (first timestamped line = 0).
LOG_MARKS = {
    "leader": re.compile(r"cluster leadership acquired"),
    "node_registered": re.compile(r"node registration complete"),
    "driver_healthy": re.compile(rf"driver={DRIVER} health=healthy"),
}
LOG_TIME = re.compile(r"^\s*(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)(Z|[+-]\d\d:?\d\d)")
JOB_STEPS = ("placed", "received", "task_setup", "downloading_artifacts",
             "artifact_downloaded", "task_started", "first_output", "exited", "seen_dead")


def run(config: LabConfig, cold: bool = False, rounds: int = 3, out=print) -> dict:
    results: dict = {"accel": config.effective_accel(), "timeout_scale": config.scale,
                     "rounds": rounds}
    if cold and config.is_vagrant:
        from lab.provision.vm import VagrantVM

        VagrantVM(config, out=out).destroy()
    steps = up(config, out=out)
    results["lab_up"] = {"total_s": round(steps.total, 1),
                         **{k: round(v, 1) for k, v in steps.timings.items()},
                         "kind": "cold (VM destroyed first)" if cold else "warm"}
    with target.leased(config, "invoke bench", out, check_ready=True) as host:
        results.update(_measure(config, host, rounds, out))
        results["driver_start"] = _driver_start(config, host, out)
    config.reports_dir.mkdir(exist_ok=True)
    (config.reports_dir / "bench.json").write_text(json.dumps(results, indent=2))
    out(render(results))
    out(f"written to {config.reports_dir / 'bench.json'}")
    return results


def _measure(config: LabConfig, host: LabHost, rounds: int, out) -> dict:
    bare_agent, bare_crun = [], []
    starts, timelines, logged, teardowns, jobs, idle, quiet = [], [], [], [], [], [], []
    with ArtifactServer() as server:
        server.add("hello.jar", config.build_dir / "jars" / "hello.jar")
        with server.expose(host) as exposed:
            # Each round measures the anchors and the lab side back to back: a machine whose
            # speed drifts during the run (it does here, by 15 % in an afternoon) shifts both.
            for i in range(rounds):
                out(f"bench: round {i + 1}/{rounds}: bare nomad agent -dev, bare crun run, "
                    "lab agent and job ...")
                quiet.append(_quiet(host, out))
                bare_agent.append(_bare_agent(host, config))
                quiet.append(_quiet(host, out))
                bare_crun.append(float(host.sudo(BARE_CRUN.format(jars=JAR_DIR),
                                                 timeout=120).stdout))
                quiet.append(_quiet(host, out))
                agent = NomadAgent(host, config.run_id, 100 + i,
                                   ready_timeout=config.timeout("agent_ready"),
                                   stop_timeout=config.timeout("agent_stop"))
                agent.start()
                try:
                    starts.append(agent.startup_seconds)
                    timelines.append(agent.timeline)
                    idle.append(_idle_cpu(host, agent.unit))
                    logged.append(log_timeline(host.read_file(agent.log_path,
                                                              missing_ok=True)))
                    job = java_job(f"lab-{config.run_id}-bench-{i}",
                                   [java_task("app", exposed.url("hello.jar"))])
                    jobs.append(_job_timeline(config, host, agent, server, job))
                    t = time.monotonic()
                    agent.drain()
                except BaseException:  # a failed measurement leaves no agent behind
                    agent.stop(check=False)
                    raise
                agent.stop()
                teardowns.append(time.monotonic() - t)
    anchor_agent = _stats([b["driver_healthy"] for b in bare_agent])
    anchor_idle = _stats([b["idle_cpu"] for b in bare_agent])
    agent_idle = _stats(idle)
    anchor_crun = _stats(bare_crun)
    agent_start = _stats(starts)
    job_total = _stats([j["exited"] for j in jobs])
    return {
        "anchors": {"bare_nomad_agent_dev_s": {**anchor_agent, "steps": _median_steps(
                        [{k: v for k, v in b.items() if k != "idle_cpu"} for b in bare_agent])},
                    "bare_nomad_agent_dev_idle_cpu_pct": anchor_idle,
                    "bare_crun_run_hello_s": anchor_crun},
        "agent": {"start_to_ready_s": agent_start,
                  "harness_timeline_s": _median_steps(timelines),
                  "agent_log_timeline_s": _median_steps(logged),
                  "teardown_s": _stats(teardowns),
                  "idle_cpu_pct": agent_idle},
        "job": {"register_to_exit_s": job_total,
                "timeline_s": _median_steps(jobs)},
        "quiet_wait_s": _stats(quiet),
        "ratios": {"agent_start_vs_bare_agent": _ratio(agent_start, anchor_agent),
                   "agent_idle_cpu_vs_bare_agent": _ratio(agent_idle, anchor_idle),
                   "job_vs_bare_crun": _ratio(job_total, anchor_crun)},
    }


def _driver_start(config: LabConfig, host: LabHost, out) -> dict[str, float]:
    """The driver alone, without Nomad (plugin/driver/latency_test.go, in the harness):
    StartTask to hello.jar's first line, against a bare `crun run` of the same OCI config
    with the driver's init as PID 1, with java as PID 1 (the init's cost) and without the
    default seccomp profile (its cost)."""
    out("bench: the driver's start path (harness, no Nomad) ...")
    lines: list[str] = []
    harness.run_on(config, host, lines.append, harness.BENCH_TESTS)
    found = re.search(r"^bench (.*)$", "\n".join(lines), re.M)
    if not found:
        raise LabError("the harness's start-latency measurement printed no 'bench' line:\n"
                       + "\n".join(lines)[-2000:])
    return {k: float(v) for k, v in (kv.split("=") for kv in found[1].split())}


def _bare_agent(host: LabHost, config: LabConfig) -> dict[str, float]:
    """The anchor's timeline, and the CPU it burns once ready (`idle_cpu`)."""
    http, rpc, serf = host.free_ports(3)
    args = [NOMAD_BIN, PLUGIN_DIR, PLUGIN_BINARY, DRIVER, http, rpc, serf,
            round(config.timeout("agent_ready")), IDLE_WINDOW_S]
    res = host.run_script("bare-agent.sh", args, check=False,
                          timeout=config.timeout("agent_ready") + IDLE_WINDOW_S + 30)
    steps = _steps(res.stdout)
    idle = re.search(r"^idle_cpu ([\d.]+)$", res.stdout, re.M)
    if res.rc or "driver_healthy" not in steps or not idle:
        raise LabError(f"the bare `nomad agent -dev` anchor did not get ready (or measured no "
                       f"idle CPU) on {host.name} (exit {res.rc}):\n{res.stdout[-2000:]}"
                       f"{res.stderr[-1000:]}")
    return {**steps, "idle_cpu": float(idle[1])}


# Each measurement starts on a quiet lab host: what the one before left running (a stopped
# agent's last exits, the kernel freeing its memory) would otherwise be charged to the next.
QUIET_BUSY = 0.10     # at most this share of the host's CPU time busy over one interval
QUIET_DEADLINE_S = 30  # then measure anyway, and say so


def quiet_command(deadline_s: float, busy_max: float, stat: str = "/proc/stat") -> str:
    """Polls `stat` every 0.5 s until the CPUs were at most busy_max busy over the last
    interval; prints "quiet <ms waited>" or, at the deadline, "busy <last share in %>". Bash
    builtins only, and `read -t` on a pipe nobody writes instead of `sleep`: under TCG every
    program started would itself be load."""
    permille = round(busy_max * 1000)
    return ("exec {w}<> <(:); now() { local t=${EPOCHREALTIME//[!0-9]/}; ms=$((t / 1000)); }; "
            f"sample() {{ read -r _ u n s i io irq sirq st _ < {stat}; "
            "busy=$((u + n + s + irq + sirq + st)); idle=$((i + io)); }; "
            f"now; t0=$ms; end=$((t0 + {round(deadline_s * 1000)})); sample; b0=$busy i0=$idle; "
            "while :; do read -rt 0.5 -u $w; sample; now; db=$((busy - b0)); di=$((idle - i0)); "
            "share=$(( db + di ? 1000 * db / (db + di) : 0 )); "
            f"if (( share <= {permille} )); then echo \"quiet $((ms - t0))\"; break; fi; "
            "if (( ms >= end )); then echo \"busy $((share / 10))\"; break; fi; "
            "b0=$busy i0=$idle; done")


def _quiet(host: LabHost, out) -> float:
    said = host.run(quiet_command(QUIET_DEADLINE_S, QUIET_BUSY),
                    timeout=QUIET_DEADLINE_S + 30).stdout.split()
    if said[:1] == ["busy"]:
        out(f"bench: the lab host stayed {said[1]} % busy for {QUIET_DEADLINE_S}s; "
            "measuring anyway")
        return float(QUIET_DEADLINE_S)
    return int(said[1]) / 1000


# What a ready agent with nothing to run costs the lab host, while the test before it runs
# (agents start ahead) or the next one waits: its own loops, the plugin's fingerprints.
IDLE_WINDOW_S = 10


def idle_cpu_command(unit: str, seconds: float, cgroup_root: str = "/sys/fs/cgroup") -> str:
    """Percent of one CPU that `unit`'s cgroup (cgroup v2) used over `seconds`."""
    stat = f"{cgroup_root}/system.slice/{unit}/cpu.stat"
    # A file without usage_usec (cgroup v1, another slice) fails here, not as a silent 0.0.
    read = f"awk '/^usage_usec/ {{print $2; found = 1}} END {{exit !found}}' {stat}"
    return (f"a=$({read}) && t=$(date +%s%N) && sleep {seconds} && b=$({read}) && "
            "e=$(date +%s%N) && awk -v a=$a -v b=$b -v t=$t -v e=$e "
            "'BEGIN { printf \"%.1f\\n\", 100 * (b - a) * 1000 / (e - t) }'")


def _idle_cpu(host: LabHost, unit: str) -> float:
    res = host.sudo(idle_cpu_command(unit, IDLE_WINDOW_S), check=False,
                    timeout=IDLE_WINDOW_S + 30)
    try:
        return float(res.stdout)
    except ValueError:
        raise LabError(f"no idle CPU figure for {unit} on {host.name} (is it cgroup v2?): "
                       f"{res.stdout!r} {res.stderr[-300:]!r}") from None


def _job_timeline(config: LabConfig, host: LabHost, agent: NomadAgent, server: ArtifactServer,
                  job: dict) -> dict[str, float]:
    """Seconds after register for each of JOB_STEPS, on this machine's clock."""
    offset = clock_offset(host)
    watcher: dict[str, str] = {}
    timeout = round(config.timeout("job"))
    # The watcher runs beside the job; the first output comes seconds after it starts.
    thread = threading.Thread(target=lambda: watcher.update(out=host.run_script(
        "first-output.sh", [f"{agent.dir}/data", timeout], check=False,
        timeout=timeout + 30).stdout))
    thread.start()
    run = JobRun(agent.api, job, config.timeout)
    registered = time.time()
    run.submit().wait_dead()
    seen_dead = time.time()
    thread.join()
    alloc = run.alloc() or {}
    events = {e["Type"]: int(e["Time"]) / 1e9 - offset for e in run.events()}
    first = re.search(r"first_output (\d+)", watcher.get("out", ""))
    downloads = [r.finished_at for r in server.requests("hello.jar")
                 if r.finished_at and r.started_at >= registered]
    at = {"placed": alloc.get("CreateTime", 0) / 1e9 - offset,
          "received": events.get("Received"),
          "task_setup": events.get("Task Setup"),
          "downloading_artifacts": events.get("Downloading Artifacts"),
          "artifact_downloaded": max(downloads) if downloads else None,
          "task_started": events.get("Started"),
          "first_output": int(first[1]) / 1e9 - offset if first else None,
          "exited": events.get("Terminated"),
          "seen_dead": seen_dead}
    return {k: round(v - registered, 3) for k, v in at.items() if v is not None}


def clock_offset(host: LabHost) -> float:
    """Lab host clock minus this machine's, in seconds (± half an SSH round trip)."""
    before = time.time()
    remote = int(host.run("date +%s%N").stdout) / 1e9
    after = time.time()
    return remote - (before + after) / 2


def log_timeline(log: str) -> dict[str, float]:
    """Seconds after the agent's first timestamped log line for each of LOG_MARKS."""
    first, found = None, {}
    for line in log.splitlines():
        m = LOG_TIME.match(line)
        if not m:
            continue
        when = datetime.fromisoformat(m[1] + m[2].replace("Z", "+00:00")).timestamp()
        first = first if first is not None else when
        for name, pattern in LOG_MARKS.items():
            if name not in found and pattern.search(line):
                found[name] = round(when - first, 3)
    return found


def render(results: dict) -> str:
    anchors, agent, job, ratios = (results[k] for k in ("anchors", "agent", "job", "ratios"))
    lines = [f"bench ({results['accel']}, {results['rounds']} rounds, medians in seconds)",
             f"  lab.up ({results['lab_up']['kind']}): {results['lab_up']['total_s']}s",
             "  agent start, as the harness sees it:  " + _line(agent["harness_timeline_s"]),
             "  agent start, as its log says:         " + _line(agent["agent_log_timeline_s"]),
             f"  agent start to ready (harness): {agent['start_to_ready_s']['median']}s;"
             f" bare nomad agent -dev: {anchors['bare_nomad_agent_dev_s']['median']}s"
             f" ({_line(anchors['bare_nomad_agent_dev_s']['steps'])})"
             f" -> ratio {ratios['agent_start_vs_bare_agent']}",
             f"  agent teardown: {agent['teardown_s']['median']}s",
             f"  ready agent with nothing to run, CPU over {IDLE_WINDOW_S}s (% of one CPU):"
             f" lab {agent['idle_cpu_pct']['median']}; bare nomad agent -dev"
             f" {anchors['bare_nomad_agent_dev_idle_cpu_pct']['median']}"
             f" -> ratio {ratios['agent_idle_cpu_vs_bare_agent']}",
             "  job of hello.jar after register:      " + _line(job["timeline_s"]),
             f"  job register to exit: {job['register_to_exit_s']['median']}s;"
             f" bare crun run: {anchors['bare_crun_run_hello_s']['median']}s"
             f" -> ratio {ratios['job_vs_bare_crun']}"]
    if "quiet_wait_s" in results:
        q = results["quiet_wait_s"]
        lines.append(f"  waited for a quiet lab host (<= {QUIET_BUSY:.0%} busy) before each "
                     f"measurement: median {q['median']}s, at most {q['max']}s")
    if "driver_start" in results:
        d = results["driver_start"]
        lines.append(f"  driver alone (harness): StartTask {d['start_task_s']:.2f}, first line"
                     f" {d['first_line_s']:.2f}; bare crun run {d['bare_crun_first_line_s']:.2f}"
                     f" with the init and seccomp, {d['bare_crun_without_init_first_line_s']:.2f}"
                     f" with java as PID 1,"
                     f" {d['bare_crun_without_seccomp_first_line_s']:.2f} without seccomp")
    return "\n".join(lines)


def _line(steps: dict[str, float]) -> str:
    return " -> ".join(f"{k} {v:.2f}" for k, v in steps.items())


def _steps(text: str) -> dict[str, float]:
    return {m[2]: int(m[1]) / 1000 for m in re.finditer(r"^step (\d+) (\S+)$", text, re.M)}


def _median_steps(samples: list[dict[str, float]]) -> dict[str, float]:
    order = [*STEPS, *LOG_MARKS, *JOB_STEPS]
    names = sorted({k for s in samples for k in s}, key=lambda k: (order.index(k)
                                                                   if k in order else 99, k))
    return {k: round(statistics.median(s[k] for s in samples if k in s), 3) for k in names}


def _ratio(measured: dict, anchor: dict) -> float:
    return round(measured["median"] / anchor["median"], 2) if anchor["median"] else 0.0


def _stats(samples: list[float]) -> dict:
    return {"median": round(statistics.median(samples), 2), "min": round(min(samples), 2),
            "max": round(max(samples), 2), "n": len(samples)}
