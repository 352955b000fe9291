"""The floors of ARCHITECTURE.md, checked: a module imports only from its own floor and the floors
below it, so data flows one way (receive → store → assemble → select → prepare/infer/explain →
conclude → report → deliver) and shared values sit on the ground floor, where every stage may use
them without pulling another stage in.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "onconode"

# Lowest first. A module belongs to the floor of its longest matching prefix.
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ground", ("onconode", "onconode.algorithm", "onconode.events", "onconode.runtime", "onconode.folders",
                "onconode.durable", "onconode.values", "onconode.config", "onconode.models", "onconode.onnx_graph")),
    ("state", ("onconode.state", "onconode.background", "onconode.audit")),
    ("receive", ("onconode.dicom_node",)),
    ("select", ("onconode.selection",)),
    ("infer", ("onconode.inference",)),
    ("conclude", ("onconode.conclusion",)),
    ("report", ("onconode.reporting", "onconode.fhir")),
    ("deliver", ("onconode.delivery",)),
    ("run", ("onconode.worker", "onconode.node", "onconode.api", "onconode.cli", "onconode.doctor",
             "onconode.analyze", "onconode.rehearsal", "onconode.__main__")),
)


def floor_of(module: str) -> int:
    best, level = -1, -1
    for index, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), index
    return level


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports_of(name: str, path: Path) -> set[str]:
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m == "onconode" or m.startswith("onconode.")}


def test_every_module_has_a_floor() -> None:
    assert all(floor_of(name) >= 0 for name in modules()), [n for n in modules() if floor_of(n) < 0]


def test_no_module_imports_a_floor_above_its_own() -> None:
    known = modules()
    wrong = []
    for name, path in sorted(known.items()):
        mine = floor_of(name)
        for target in imports_of(name, path):
            if target not in known:  # "from onconode.x import Name": the module is the prefix
                continue
            if floor_of(target) > mine:
                wrong.append(f"{name} ({FLOORS[mine][0]}) imports {target} ({FLOORS[floor_of(target)][0]})")
    assert wrong == []
