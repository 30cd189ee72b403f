"""The lab's imports run one way, down the layers (README.md, "Layout"): no module imports a
layer above its own, and no modules import each other in a circle. Imports inside functions
count too (a late import hides a circle, it does not break it). lab/ uses invoke only for
Fabric's exception types, and only the pytest plugin imports pytest."""

from __future__ import annotations

import ast

from lab.core.config import ROOT

LAB = ROOT / "lab"

# Each layer and the layers it may import (besides itself). Top to bottom: the pytest plugin and
# the workflows behind ./invoke; checks and reports; faults and the artifact server; the Nomad
# agent, its API and jobs; provisioning of the control host, box and VM; the remote lab host
# and its layout; the core (config, errors, waits).
LAYERS = {
    "pytest_plugin": {"workflows", "checks", "faults", "nomad", "provision", "remote", "core"},
    "workflows": {"checks", "faults", "nomad", "provision", "remote", "core"},
    "checks": {"faults", "nomad", "remote", "core"},
    "faults": {"provision", "remote", "core"},
    "nomad": {"remote", "core"},
    "provision": {"remote", "core"},
    "remote": {"core"},
    "core": set(),
}


def module_name(path) -> str:
    parts = path.relative_to(LAB).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lab_imports() -> dict[str, set[str]]:
    """module ("nomad.agent") -> the lab modules it imports anywhere in its body; plus
    'ext:<name>' entries for what it imports from outside lab/."""
    paths = sorted(p for p in LAB.rglob("*.py") if p != LAB / "__init__.py")
    modules = {module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                top, _, rest = node.module.partition(".")
                if top != "lab":
                    deps.add(f"ext:{top}")
                    continue
                for alias in node.names:  # `from lab.nomad import agent` names a module
                    child = f"{rest}.{alias.name}" if rest else alias.name
                    deps.add(child if child in modules else rest)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    top, _, rest = alias.name.partition(".")
                    deps.add(rest if top == "lab" else f"ext:{top}")
        graph[module_name(path)] = deps - {module_name(path), ""}
    return graph


def layer(module: str) -> str:
    return module.split(".")[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, deps in sorted(graph.items()):
        for dep in sorted(d for d in deps if not d.startswith("ext:")):
            if layer(dep) != layer(module) and layer(dep) not in LAYERS[layer(module)]:
                bad.append(f"{module} -> {dep}")
    return bad


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(d for d in graph.get(node, ()) if not d.startswith("ext:")):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep, path + [dep])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_every_module_is_in_a_known_layer():
    assert sorted({layer(m) for m in lab_imports()} - set(LAYERS)) == []


def test_lab_imports_run_down_the_layers():
    assert upward_imports(lab_imports()) == []


def test_upward_imports_sees_a_late_import_of_a_higher_layer():
    graph = {"remote.host": {"nomad.agent"}, "nomad.agent": {"remote.host", "ext:requests"},
             "checks.janitor": {"faults"}}
    assert upward_imports(graph) == ["remote.host -> nomad.agent"]


def test_lab_imports_form_no_circle():
    cycle = find_cycle(lab_imports())
    assert cycle is None, "an import circle in lab/: " + " -> ".join(cycle)


def test_find_cycle_sees_a_circle_through_a_late_import():
    assert find_cycle({"agent": {"janitor"}, "janitor": {"faults", "agent"}, "faults": set()}) \
        == ["agent", "janitor", "agent"]
    assert find_cycle({"a": {"b"}, "b": {"ext:pytest"}}) is None


def test_only_the_pytest_plugin_imports_pytest_and_nothing_imports_invoke():
    graph = lab_imports()
    assert {layer(m) for m, deps in graph.items() if "ext:pytest" in deps} == {"pytest_plugin"}
    # Fabric raises invoke's exception types (CommandTimedOut, ThreadException): the SSH
    # layer catches them; nothing in lab/ uses invoke's task machinery.
    assert sorted(m for m, deps in graph.items() if "ext:invoke" in deps) \
        == ["nomad.agent", "remote.host"]
