"""Shared fakes for the unit tests: a lab host, a Nomad API, a clock and a tiny Nomad HTTP server.

They stand in for what the unit tests must not touch (SSH, a VM, a real agent, wall-clock time)
while keeping the behaviour the library relies on: FakeHost reuses LabHost's own sudo/read_file/
exists/free_ports on top of a scripted `run`, so those helpers are exercised for real.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from lab.core.errors import CommandFailed
from lab.remote.host import CommandResult, LabHost, SSHSpec

# -- scripted answers ------------------------------------------------------------------------


class Script:
    """Successive answers to a polled call: one per call, the last one repeats forever.

    An answer that is an exception instance is raised instead of returned.
    """

    def __init__(self, *answers: object):
        if not answers:
            raise ValueError("Script needs at least one answer")
        self.answers = list(answers)
        self.calls = 0

    def next(self) -> object:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, BaseException):
            raise answer
        return answer


class FakeClock:
    """A monotonic clock that only moves when someone sleeps on it."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"negative sleep {seconds}"
        self.sleeps.append(seconds)
        self.now += seconds


# -- host ------------------------------------------------------------------------------------


@dataclass
class Call:
    cmd: str
    sudo: bool
    check: bool
    timeout: float | None


Answer = CommandResult | str | Callable[[str], "CommandResult | str"] | BaseException


class FakeHost(LabHost):
    """A LabHost whose commands are recorded and answered from rules instead of SSH.

    `host.on("systemctl is-active", "active\\n")` answers every command containing that text;
    the newest matching rule wins, so a test can override a default. A list of answers is
    used in order (the last repeats). Unmatched commands succeed with empty output.
    """

    def __init__(self, name: str = "lab", user: str = "root"):
        # Deliberately no super().__init__: no fabric Connection, nothing to connect to.
        self.spec = SSHSpec("127.0.0.1", 2222, user)
        self.name = name
        self.command_timeout = 5
        self.calls: list[Call] = []
        self.files: dict[str, str] = {}
        self.puts: list[tuple[Path, str, str]] = []
        self.tunnels: list[int] = []
        self.open_tunnels = 0
        self._rules: list[tuple[str, Script]] = []

    def on(self, text: str, *answers: Answer, rc: int = 0, stderr: str = "") -> FakeHost:
        if not answers:
            answers = ("",)
        normalised = [CommandResult("", rc, a, stderr) if isinstance(a, str) else a
                      for a in answers]
        self._rules.insert(0, (text, Script(*normalised)))
        return self

    @property
    def commands(self) -> list[str]:
        return [c.cmd for c in self.calls]

    def ran(self, text: str) -> list[Call]:
        return [c for c in self.calls if text in c.cmd]

    def run(self, cmd: str, *, check: bool = True, timeout: float | None = None,
            sudo: bool = False, hint: str = "") -> CommandResult:
        self.calls.append(Call(cmd, sudo, check, timeout))
        answer: object = CommandResult(cmd, 0, "", "")
        for text, script in self._rules:
            if text in cmd:
                answer = script.next()
                break
        if callable(answer) and not isinstance(answer, CommandResult):
            answer = answer(cmd)
        if isinstance(answer, str):
            answer = CommandResult(cmd, 0, answer, "")
        result = CommandResult(cmd, answer.rc, answer.stdout, answer.stderr)
        if check and not result.ok:
            raise CommandFailed(self.name, cmd, result.rc, result.stderr, result.stdout, hint)
        return result

    def write_file(self, path: str, content: str, mode: str = "0644") -> None:
        self.files[path] = content

    def put(self, local, remote: str, mode: str = "0644") -> None:
        self.puts.append((Path(local), remote, mode))

    def get(self, remote: str, local) -> None:
        raise AssertionError(f"unexpected get {remote}")

    @contextmanager
    def forward_local(self, remote_port: int, remote_host: str = "127.0.0.1") -> Iterator[int]:
        self.tunnels.append(remote_port)
        self.open_tunnels += 1
        try:
            yield 40000 + len(self.tunnels)
        finally:
            self.open_tunnels -= 1

    def close(self) -> None:
        pass


# -- Nomad API -------------------------------------------------------------------------------


def cluster_state(leader: str = "127.0.0.1:4647", node_status: str | None = "ready",
                  drivers: dict | None = None, node_id: str = "node-0001") -> dict:
    """One observation of an agent for FakeApi: leader, our node summary, the full node."""
    node = None if node_status is None else {"ID": node_id, "Status": node_status}
    full = None if node is None else {**node, "Drivers": drivers if drivers is not None else {}}
    return {"leader": leader, "node": node, "full": full}


HEALTHY = {"java-crun": {"Detected": True, "Healthy": True, "HealthDescription": "Healthy"}}


def alloc(client_status: str = "running", task: str = "app", state: str = "running",
          events: list[str | dict] = (), alloc_id: str = "a1b2c3d4-0000-0000-0000-000000000001",
          failed: bool = False, restarts: int = 0, create_index: int = 10) -> dict:
    """An allocation as /v1/allocation/<id> returns it (the fields the lab reads)."""
    evs = [{"Type": e} if isinstance(e, str) else e for e in events]
    return {"ID": alloc_id, "ClientStatus": client_status, "CreateIndex": create_index,
            "TaskStates": {task: {"State": state, "Failed": failed, "Restarts": restarts,
                                  "Events": evs}}}


class FakeApi:
    """The LabApi calls the agent and JobRun make, answered from scripts.

    - `cluster`: observations (see cluster_state); `leader()` moves to the next one, so each
      readiness poll sees one state.
    - `allocs`: newest-allocation snapshots (None: no allocation yet); `job_allocations()`
      moves to the next one, `allocation()` returns the current one.
    - `logs`: successive stdout texts; `evaluations`: successive evaluation lists.
    - `jobs`: job IDs that jobs() lists; `alloc_lists`: successive answers of allocations().
    Every call is recorded in `calls` as (method, args).
    """

    def __init__(self, cluster=(), allocs=(), logs=(), evaluations=(), jobs=(),
                 alloc_lists=()):
        self.cluster = Script(*(cluster or [cluster_state(drivers=HEALTHY)]))
        self.job_list = [{"ID": j} for j in jobs]
        # Successive answers of allocations() (all allocations); default: the current one.
        self.alloc_lists = Script(*alloc_lists) if alloc_lists else None
        self.alloc_script = Script(*(allocs or [None]))
        self.log_script = Script(*(logs or [""]))
        self.eval_script = Script(*(evaluations or [[]]))
        self.calls: list[tuple[str, tuple]] = []
        self._state: dict = {}
        self._alloc: dict | None = None
        self.seen_alloc_ids: set[str] = set()  # as LabApi collects them

    def _record(self, name: str, *args) -> None:
        self.calls.append((name, args))

    def called(self, name: str) -> list[tuple]:
        return [args for method, args in self.calls if method == name]

    # cluster
    def leader(self) -> str:
        self._record("leader")
        self._state = self.cluster.next()
        return self._state["leader"]

    def node_by_name(self, name: str) -> dict | None:
        self._record("node_by_name", name)
        node = self._state["node"]
        return None if node is None else {**node, "Name": name}

    def node(self, node_id: str) -> dict:
        self._record("node", node_id)
        return self._state["full"]

    # jobs and allocations
    def register(self, job: dict) -> dict:
        self._record("register", job["Job"]["ID"])
        return {"EvalID": "eval-1"}

    def deregister(self, job_id: str, purge: bool = True) -> dict:
        self._record("deregister", job_id, purge)
        return {}

    def job_allocations(self, job_id: str) -> list[dict]:
        self._record("job_allocations", job_id)
        self._alloc = self.alloc_script.next()
        if self._alloc is None:
            return []
        stub = {k: self._alloc[k] for k in ("ID", "ClientStatus", "CreateIndex")}
        # Newest first, unlike Nomad's usual order: callers must sort by CreateIndex.
        return [stub, {**stub, "ID": "older-alloc", "CreateIndex": 1}]

    def allocation(self, alloc_id: str) -> dict:
        self._record("allocation", alloc_id)
        assert self._alloc is not None and alloc_id == self._alloc["ID"], (
            f"asked for allocation {alloc_id}, the newest is "
            f"{self._alloc and self._alloc['ID']}")
        return self._alloc

    def allocations(self) -> list[dict]:
        self._record("allocations")
        if self.alloc_lists is not None:
            return self.alloc_lists.next()
        return [] if self._alloc is None else [self._alloc]

    def jobs(self) -> list[dict]:
        self._record("jobs")
        return list(self.job_list)

    def client_gc(self) -> None:
        self._record("client_gc")

    def logs(self, alloc_id: str, task: str, stream: str = "stdout") -> str:
        self._record("logs", alloc_id, task, stream)
        return self.log_script.next()

    def job_evaluations(self, job_id: str) -> list[dict]:
        self._record("job_evaluations", job_id)
        return self.eval_script.next()

    def signal(self, alloc_id: str, signal: str, task: str | None = None) -> None:
        self._record("signal", alloc_id, signal, task)


# -- a tiny Nomad HTTP server on 127.0.0.1 --------------------------------------------------


class Text(str):
    """A FakeNomadServer body sent as text/plain (logs, Nomad's plain-text errors)."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: object


class FakeNomadServer:
    """Answers python-nomad's HTTP calls from a route table; records every request.

    routes[(METHOD, path)] = Script of (status, body) answers; a Text body is sent as
    text/plain, anything else (a str too) as JSON. Unknown routes answer 404.
    """

    def __init__(self):
        self.routes: dict[tuple[str, str], Script] = {}
        self.requests: list[Request] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                server.requests.append(Request(self.command, url.path, parse_qs(url.query),
                                               body))
                script = server.routes.get((self.command, url.path))
                status, payload = script.next() if script else (404, Text("no such route\n"))
                text = isinstance(payload, Text)
                data = (payload if text else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._httpd.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval (0.5 s by default).
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,),
                                        daemon=True)

    def route(self, method: str, path: str, *answers: tuple[int, object]) -> FakeNomadServer:
        self.routes[(method, path)] = Script(*answers)
        return self

    def __enter__(self) -> FakeNomadServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def bash_syntax_errors(script: str) -> str:
    """bash -n's complaints about a script (empty when it parses): catches quoting and brace
    mistakes in the f-strings that build remote commands, without running anything."""
    import subprocess

    res = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True,
                         timeout=10)
    return res.stderr if res.returncode else ""
