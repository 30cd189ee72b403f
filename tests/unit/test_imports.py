"""The lab's imports run one way: no module imports another that (directly or not) imports it
back, counting imports inside functions (a late import hides a circle, it does not break it).
lab/ uses invoke only for Fabric's exception types, and only the pytest plugin imports pytest."""

from __future__ import annotations

import ast

from lab.config import ROOT

LAB = ROOT / "lab"


def lab_imports() -> dict[str, set[str]]:
    """module -> the lab modules it imports anywhere in its body; plus 'ext:<name>' entries."""
    modules = {p.stem for p in LAB.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for path in sorted(LAB.glob("*.py")):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "lab":
                    deps |= {a.name for a in node.names if a.name in modules}
                elif node.module.startswith("lab."):
                    deps.add(node.module.split(".")[1])
                else:
                    deps.add(f"ext:{node.module.split('.')[0]}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    deps.add(alias.name.split(".")[1] if top == "lab" else f"ext:{top}")
        graph[path.stem] = deps - {path.stem}
    return graph


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


def test_lab_imports_form_no_circle():
    cycle = find_cycle(lab_imports())
    assert cycle is None, "an import circle in lab/: " + " -> ".join(cycle)


def test_find_cycle_sees_a_circle_through_a_late_import():
    assert find_cycle({"agent": {"janitor"}, "janitor": {"faults", "agent"}, "faults": set()}) \
        == ["agent", "janitor", "agent"]
    assert find_cycle({"a": {"b"}, "b": {"ext:pytest"}}) is None


def test_only_the_pytest_plugin_imports_pytest_and_nothing_imports_invoke():
    graph = lab_imports()
    assert sorted(m for m, deps in graph.items() if "ext:pytest" in deps) == ["pytest_plugin"]
    # Fabric raises invoke's exception types (CommandTimedOut, ThreadException): the SSH
    # layer catches them; nothing in lab/ uses invoke's task machinery.
    assert sorted(m for m, deps in graph.items() if "ext:invoke" in deps) == ["agent", "host"]
