"""Jobs: what the `jobs` fixture gives a test, to build and submit java-crun jobs whose JARs
come from the lab's artifact server; every JobRun it submits is kept (its milestones are the
test's phases), and each wait's timeout names the test's diagnostics bundle."""

from __future__ import annotations

from pathlib import Path

from lab.core.config import LabConfig
from lab.nomad.agent import NomadAgent
from lab.nomad.jobrun import JobRun
from lab.nomad.jobs import java_job, java_task, job_id


class Jobs:
    def __init__(self, test_name: str, agent: NomadAgent, artifacts, config: LabConfig,
                 bundle: Path):
        self.test_name, self.agent, self.artifacts, self.config = (
            test_name, agent, artifacts, config)
        self.bundle = bundle
        self.runs: list[JobRun] = []

    def jar_url(self, name: str) -> str:
        name = name if name.endswith(".jar") else f"{name}.jar"
        return self.artifacts.exposed.url(name)

    def id(self, suffix: str = "") -> str:
        return job_id(self.config.run_id, f"{self.test_name}-{suffix}".strip("-"))

    def task(self, jar: str = "hello", name: str = "app", **kwargs) -> dict:
        return java_task(name, self.jar_url(jar), **kwargs)

    def job(self, *tasks: dict, job_id: str | None = None, **kwargs) -> dict:
        return java_job(job_id or self.id(), list(tasks), **kwargs)

    def submit(self, job: dict) -> JobRun:
        run = JobRun(self.agent.api, job, self.config.timeout,
                     diag_hint=f"diagnostics: {self.bundle}").submit()
        self.runs.append(run)
        return run

    def run(self, jar: str = "hello", *, job_kwargs: dict | None = None, **task_kwargs) -> JobRun:
        """One task group, one task named 'app' running `jar`; returns the submitted JobRun."""
        return self.submit(self.job(self.task(jar, **task_kwargs), **(job_kwargs or {})))
