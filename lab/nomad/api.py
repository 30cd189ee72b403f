"""Typed calls to one agent's HTTP API over python-nomad (through the agent's SSH tunnel).

python-nomad covers the endpoints the lab needs; what it lacks (blocking queries, node by
name) is composed here. Errors come back as ApiError naming the call and Nomad's answer.
"""

from __future__ import annotations

import nomad
import requests
from nomad.api import exceptions as nomad_errors

from lab.core.errors import LabError


class ApiError(LabError):
    def __init__(self, call: str, detail: object):
        resp = getattr(detail, "nomad_resp", None)
        text = getattr(resp, "text", None) or str(resp if resp is not None else detail)
        self.call, self.detail, self.text = call, detail, text
        self.status = getattr(resp, "status_code", None)
        super().__init__(f"Nomad API {call} failed: {text.strip()}")


# What a poller may treat as "not ready yet" rather than a hard failure.
TRANSIENT = (ApiError, requests.RequestException, OSError)


class LabApi:
    def __init__(self, host: str, port: int, timeout: float = 15):
        self.address = f"http://{host}:{port}"
        # Explicit address, region and namespace: python-nomad would otherwise take NOMAD_ADDR,
        # NOMAD_REGION and NOMAD_NAMESPACE from the environment (a developer's own cluster).
        self.client = nomad.Nomad(address=self.address, region="global", namespace="default",
                                  timeout=timeout)
        # Every allocation this agent ever reported: its tasks' cgroups and java processes
        # carry these ids, which is how a leftover scan tells this agent's traces from others'.
        self.seen_alloc_ids: set[str] = set()

    def _seen(self, allocs):
        for alloc in allocs if isinstance(allocs, list) else [allocs]:
            if isinstance(alloc, dict) and alloc.get("ID"):
                self.seen_alloc_ids.add(alloc["ID"])
        return allocs

    def _call(self, name: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (nomad_errors.BaseNomadException, requests.RequestException) as exc:
            raise ApiError(name, exc) from exc

    # -- cluster -------------------------------------------------------------------------
    def leader(self) -> str:
        return self._call("status/leader", self.client.status.leader.get_leader)

    def nodes(self) -> list[dict]:
        return self._call("nodes", self.client.nodes.get_nodes)

    def node(self, node_id: str) -> dict:
        return self._call(f"node {node_id}", self.client.node.get_node, node_id)

    def node_by_name(self, name: str) -> dict | None:
        return next((n for n in self.nodes() if n["Name"] == name), None)

    def driver_info(self, node_id: str, driver: str) -> dict:
        return (self.node(node_id).get("Drivers") or {}).get(driver) or {}

    def system_gc(self) -> None:
        self._call("system/gc", self.client.system.initiate_garbage_collection)

    # -- jobs ----------------------------------------------------------------------------
    def register(self, job: dict) -> dict:
        """PUT /v1/jobs; returns Nomad's answer (EvalID, ...)."""
        return self._call(f"register job {job['Job']['ID']}",
                          self.client.jobs.register_job, job)

    def jobs(self) -> list[dict]:
        return self._call("jobs", self.client.jobs.get_jobs)

    def job(self, job_id: str) -> dict | None:
        try:
            return self._call(f"job {job_id}", self.client.job.get_job, job_id)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def deregister(self, job_id: str, purge: bool = True) -> dict:
        return self._call(f"deregister job {job_id}", self.client.job.deregister_job,
                          job_id, purge=purge)

    def job_allocations(self, job_id: str) -> list[dict]:
        return self._seen(self._call(f"allocations of job {job_id}",
                                     self.client.job.get_allocations, job_id))

    def job_evaluations(self, job_id: str) -> list[dict]:
        return self._call(f"evaluations of job {job_id}",
                          self.client.job.get_evaluations, job_id)

    def job_summary(self, job_id: str) -> dict:
        return self._call(f"summary of job {job_id}", self.client.job.get_summary, job_id)

    # -- allocations ---------------------------------------------------------------------
    def allocation(self, alloc_id: str) -> dict:
        return self._seen(self._call(f"allocation {alloc_id}",
                                     self.client.allocation.get_allocation, alloc_id))

    def allocations(self) -> list[dict]:
        return self._seen(self._call("allocations", self.client.allocations.get_allocations))

    def logs(self, alloc_id: str, task: str, stream: str = "stdout") -> str:
        """The whole stdout or stderr of a task so far, as plain text."""
        params = {"task": task, "type": stream, "plain": "true", "origin": "start", "offset": 0}
        resp = self._call(f"logs {stream} of {task} in {alloc_id[:8]}",
                          self.client.client.stream_logs.request, alloc_id, params=params,
                          method="get")
        # Nomad sends plain logs without a charset; requests would guess ISO-8859-1.
        return resp.content.decode("utf-8", errors="replace")

    def read_alloc_file(self, alloc_id: str, path: str) -> str:
        """A file of the allocation's directory (`nomad alloc fs`), e.g. "app/local/x.log"."""
        resp = self._call(f"file {path} of {alloc_id[:8]}", self.client.client.cat.request,
                          alloc_id, params={"path": path}, method="get")
        return resp.content.decode("utf-8", errors="replace")

    def signal(self, alloc_id: str, signal: str, task: str | None = None) -> None:
        self._call(f"signal {signal} to {alloc_id[:8]}",
                   self.client.client.allocation.signal_allocation, alloc_id, signal, task)

    def stop_allocation(self, alloc_id: str) -> None:
        self._call(f"stop allocation {alloc_id[:8]}",
                   self.client.allocation.stop_allocation, alloc_id)

    def alloc_stats(self, alloc_id: str) -> dict:
        return self._call(f"stats of {alloc_id[:8]}",
                          self.client.client.allocation.read_allocation_stats, alloc_id)

    def client_gc(self) -> None:
        """GC terminal allocations on the client now: destroys their tasks and alloc dirs."""
        self._call("client/gc", self.client.client.gc_all_allocations.garbage_collect)
