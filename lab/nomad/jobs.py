"""Pure builders of the JSON that Nomad's HTTP API takes for `PUT /v1/jobs`.

No I/O here. Field names follow Nomad's api package (api/jobs.go, api/tasks.go,
api/resources.go); durations are integers in nanoseconds, as Go's time.Duration marshals.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from urllib.parse import urlparse

DRIVER = "java-crun"
NS_PER_S = 1_000_000_000
MAX_JOB_ID = 60
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
ARTIFACT_MODES = ("file", "any", "dir")
# Kept small so many tasks fit the default 300 MB ephemeral disk; big enough for bigoutput.
DEFAULT_LOGS = {"MaxFiles": 3, "MaxFileSizeMB": 10}


def seconds(value: float) -> int:
    """A duration for the API: nanoseconds."""
    return int(round(value * NS_PER_S))


def artifact(url: str, destination: str, *, mode: str = "file", checksum: str | None = None,
             options: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
             chown: bool = False) -> dict:
    """One entry of Task.Artifacts (api.TaskArtifact). destination is relative to the task
    dir: a file path in mode "file", a directory in modes "any" and "dir"."""
    if mode not in ARTIFACT_MODES:
        raise ValueError(f"artifact mode {mode!r} is not one of {ARTIFACT_MODES}")
    getter_options = dict(options or {})
    if checksum is not None:
        getter_options["checksum"] = normalise_checksum(checksum)
    entry = {"GetterSource": url, "RelativeDest": destination, "GetterMode": mode}
    if getter_options:
        entry["GetterOptions"] = getter_options
    if headers:
        entry["GetterHeaders"] = dict(headers)
    if chown:
        entry["Chown"] = True
    return entry


def normalise_checksum(checksum: str) -> str:
    """"sha256:<hex>" as go-getter wants it; a bare 64-hex digest gets the prefix. Anything
    else passes through untouched, so a test can send a malformed checksum on purpose."""
    if _SHA256.match(checksum.lower()):
        return f"sha256:{checksum.lower()}"
    return checksum


def jar_name_from_url(url: str) -> str:
    name = urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise ValueError(f"cannot tell the JAR's file name from {url!r}: pass jar_name=")
    return name


def java_task(name: str, jar_url: str | None, *, jar_name: str | None = None,
              args: Iterable[str] = (), jvm_options: Iterable[str] = (),
              env: Mapping[str, str] | None = None, user: str | None = None,
              kill_signal: str | None = None, kill_timeout_s: float | None = None,
              memory_mb: int = 256, memory_max_mb: int | None = None, cpu: int = 100,
              checksum: str | None = None, artifact_mode: str = "file",
              extra_artifacts: Iterable[dict] = (), main_class: str | None = None,
              class_path: str | Iterable[str] | None = None, config: Mapping | None = None,
              logs: Mapping[str, int] | None = None, cores: int | None = None,
              volume_mounts: Iterable[dict] = ()) -> dict:
    """A java-crun task (api.Task) whose JAR is downloaded as an artifact to local/<jar_name>.

    jar_url=None adds no artifact (for "jar not found" tests: then jar_name is required).
    main_class/class_path switch the driver to `class` mode. `config` is merged last into
    Config; a value of None removes that key (e.g. {"jar_path": None} for a missing-field test).
    cores reserves whole cores (`resources { cores = N }`) instead of `cpu` (Nomad takes one or
    the other); volume_mounts are volume_mount() entries.
    """
    if jar_name is None:
        if jar_url is None:
            raise ValueError("java_task needs jar_name= when jar_url is None")
        jar_name = jar_name_from_url(jar_url)
    jar_path = f"local/{jar_name}"

    artifacts = []
    if jar_url is not None:
        if artifact_mode == "file":
            artifacts.append(artifact(jar_url, jar_path, mode="file", checksum=checksum))
        else:
            # In "any"/"dir" mode go-getter keeps the URL's own file name inside the directory.
            if jar_name_from_url(jar_url) != jar_name:
                raise ValueError(f"in artifact mode {artifact_mode!r} the JAR keeps the URL's "
                                 f"file name ({jar_name_from_url(jar_url)!r}), not {jar_name!r}")
            artifacts.append(artifact(jar_url, "local/", mode=artifact_mode, checksum=checksum))
    artifacts.extend(dict(extra) for extra in extra_artifacts)

    task_config: dict = {}
    if main_class is not None:
        task_config["class"] = main_class
        if class_path is None or isinstance(class_path, str):
            class_path = [class_path or jar_path]
        task_config["class_path"] = list(class_path)
    else:
        task_config["jar_path"] = jar_path
    if jvm_options:
        task_config["jvm_options"] = list(jvm_options)
    if args:
        task_config["args"] = list(args)
    for key, value in (config or {}).items():
        if value is None:
            task_config.pop(key, None)
        else:
            task_config[key] = value

    resources = {"CPU": cpu, "MemoryMB": memory_mb} if not cores else {"Cores": cores,
                                                                      "MemoryMB": memory_mb}
    if memory_max_mb is not None:
        resources["MemoryMaxMB"] = memory_max_mb

    task: dict = {
        "Name": name,
        "Driver": DRIVER,
        "Config": task_config,
        "Resources": resources,
        "LogConfig": dict(logs or DEFAULT_LOGS),
    }
    if artifacts:
        task["Artifacts"] = artifacts
    if env:
        task["Env"] = dict(env)
    if user is not None:
        task["User"] = user
    if kill_signal is not None:
        task["KillSignal"] = kill_signal
    if kill_timeout_s is not None:
        task["KillTimeout"] = seconds(kill_timeout_s)
    if volume_mounts:
        task["VolumeMounts"] = [dict(m) for m in volume_mounts]
    return task


NETWORK_MODES = ("host", "bridge", "none")


def group_network(mode: str = "bridge", *, ports: Mapping[str, int] | None = None,
                  hostname: str | None = None, dns: Mapping | None = None) -> dict:
    """A group's `network` block (api.NetworkResource): `mode`, dynamic ports by label with the
    port inside the allocation's namespace they map to (`port "http" { to = 8080 }`: {"http":
    8080}; 0 maps to the same number), an optional hostname and a dns_config()."""
    if mode not in NETWORK_MODES:
        raise ValueError(f"network mode {mode!r} is not one of {NETWORK_MODES}")
    network: dict = {"Mode": mode}
    if ports:
        network["DynamicPorts"] = [{"Label": label, "To": to} for label, to in ports.items()]
    if hostname is not None:
        network["Hostname"] = hostname
    if dns is not None:
        network["DNS"] = dict(dns)
    return network


def dns_config(servers: Iterable[str] = (), searches: Iterable[str] = (),
               options: Iterable[str] = ()) -> dict:
    """The `dns` block of a group's network (api.DNSConfig): Nomad has no task-level one."""
    return {"Servers": list(servers), "Searches": list(searches), "Options": list(options)}


def host_volume(source: str, *, read_only: bool = False) -> dict:
    """A group's `volume` request of a client host volume (api.VolumeRequest); the group's
    volumes are keyed by name: java_job(volumes={name: host_volume(...)})."""
    return {"Type": "host", "Source": source, "ReadOnly": read_only}


def volume_mount(volume: str, destination: str, *, read_only: bool = False,
                 propagation_mode: str | None = None) -> dict:
    """A task's `volume_mount` (api.VolumeMount) of the group's volume `volume`."""
    mount: dict = {"Volume": volume, "Destination": destination, "ReadOnly": read_only}
    if propagation_mode is not None:
        mount["PropagationMode"] = propagation_mode
    return mount


def restart_policy(attempts: int, delay_s: float, mode: str) -> dict:
    """api.RestartPolicy. Interval is made long enough for every attempt, as Nomad requires
    (attempts × delay ≤ interval, interval ≥ 5 s)."""
    if mode not in ("fail", "delay"):
        raise ValueError(f"restart mode {mode!r} is not 'fail' or 'delay'")
    if attempts == 0 and mode != "fail":
        raise ValueError("restart mode 'delay' with 0 attempts is refused by Nomad: use 'fail'")
    interval_s = max(300.0, 2 * attempts * delay_s)
    return {"Attempts": attempts, "Delay": seconds(delay_s), "Interval": seconds(interval_s),
            "Mode": mode}


def java_job(job_id: str, tasks: Iterable[dict], *, job_type: str = "batch",
             restart_attempts: int = 0, restart_delay_s: float = 1, restart_mode: str = "fail",
             group: str = "app", datacenters: Iterable[str] = ("*",),
             disk_mb: int | None = None, meta: Mapping[str, str] | None = None,
             network: Mapping | None = None, volumes: Mapping[str, Mapping] | None = None) -> dict:
    """{"Job": api.Job} with one group of `tasks`. Rescheduling is off, so a failed job stays
    failed on this node instead of being placed again; restarts follow restart_*. `network` is
    the group's group_network(), `volumes` its host_volume() requests by name."""
    if job_type not in ("batch", "service", "sysbatch", "system"):
        raise ValueError(f"job type {job_type!r} is not batch, service, sysbatch or system")
    check_job_id(job_id)
    tasks = [dict(task) for task in tasks]
    if not tasks:
        raise ValueError(f"job {job_id!r} needs at least one task")
    names = [task["Name"] for task in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names in job {job_id!r} must be unique, got {names}")
    task_group: dict = {
        "Name": group,
        "Count": 1,
        "RestartPolicy": restart_policy(restart_attempts, restart_delay_s, restart_mode),
        "Tasks": tasks,
    }
    if job_type not in ("system", "sysbatch"):
        task_group["ReschedulePolicy"] = {"Attempts": 0, "Unlimited": False}
    if disk_mb is not None:
        task_group["EphemeralDisk"] = {"SizeMB": disk_mb}
    if network is not None:
        task_group["Networks"] = [dict(network)]
    if volumes:
        task_group["Volumes"] = {name: {"Name": name, **dict(request)}
                                 for name, request in volumes.items()}
    job: dict = {
        "ID": job_id,
        "Name": job_id,
        "Type": job_type,
        "Datacenters": list(datacenters),
        "TaskGroups": [task_group],
    }
    if meta:
        job["Meta"] = dict(meta)
    return {"Job": job}


def check_job_id(job_id: str) -> None:
    if not job_id or " " in job_id or "\0" in job_id:
        raise ValueError(f"job ID {job_id!r} must be non-empty with no spaces or NULs "
                         "(make one with lab.nomad.jobs.job_id)")


def slug(text: str) -> str:
    """Lower-case [a-z0-9-] only, single dashes, none at either end."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def job_id(run_id: str, test_name: str, *, suffix: str | None = None) -> str:
    """A run-tagged, unique job ID: lab-<run id>-<test slug>-<4 hex>, at most 60 characters.

    The "lab-<run id>-" prefix is what sweeps match to find a run's leftovers.
    """
    run = slug(run_id) or "run"
    tail = slug(suffix) if suffix is not None else secrets.token_hex(2)
    room = MAX_JOB_ID - len(f"lab-{run}--{tail}")
    if room < 1:
        raise ValueError(f"run id {run_id!r} is too long for a {MAX_JOB_ID}-character job ID")
    test = slug(test_name.removeprefix("test_"))[:room].rstrip("-") or "job"[:room]
    return f"lab-{run}-{test}-{tail}"
