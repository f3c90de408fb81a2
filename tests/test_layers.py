"""Dependencies point one way (docs/architecture.md): every import of the project's own modules, read with
`ast`, is checked against the layer it comes from and the one it goes to, and module-level imports must
not form a cycle.

    composition  fastmetro_stream/          may import anything
    tools        tools/                     the protocol, fastmetro/, draw/ (never stages/ or the kernel)
    stages       stages/                    the kernel, the protocol, fastmetro/, draw/ (never tools/ or the top)
    draw         draw/                      the protocol and fastmetro/
    kernel       pipeline/ (the rest)       the protocol (never a stage, a tool or the top)
    protocol     pipeline/{messages,wire*,subscriber,recording,publisher}   fastmetro/
    network      fastmetro/                 nothing of the project but itself
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("fastmetro", "pipeline", "stages", "draw", "tools", "fastmetro_stream")
PROTOCOL = {"pipeline.messages", "pipeline.wire", "pipeline.wire_schema", "pipeline.wire_arrays", "pipeline.wire_encode",
            "pipeline.wire_decode", "pipeline.wire_limits", "pipeline.wire_record", "pipeline.wire_samples",
            "pipeline.subscriber", "pipeline.recording", "pipeline.publisher", "pipeline.delivery"}

MAY_IMPORT = {
    "network": {"network"},
    "protocol": {"network", "protocol"},
    "kernel": {"protocol", "kernel"},
    "draw": {"network", "protocol", "draw"},
    "stages": {"network", "protocol", "kernel", "draw", "stages"},
    "tools": {"network", "protocol", "draw", "tools"},
    "composition": {"network", "protocol", "kernel", "draw", "stages", "tools", "composition"},
}


def layer(module: str) -> str:
    top = module.split(".")[0]
    if top == "fastmetro":
        return "network"
    if top == "pipeline":
        if module == "pipeline":
            return "protocol"
        return "protocol" if ".".join(module.split(".")[:2]) in PROTOCOL else "kernel"
    return {"stages": "stages", "draw": "draw", "tools": "tools", "fastmetro_stream": "composition"}[top]


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")) if (REPO / pkg).is_dir() else []:
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int, bool]]:
    """(imported project module, line, at module level) of every import in the file; `from a import b`
    counts as importing a.b when that is a module, else a. Imports under `if TYPE_CHECKING:` are skipped."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            top_level.add(id(node))
        elif isinstance(node, ast.Try):  # try: import x / except ImportError at module level
            for sub in node.body + [h for hh in node.handlers for h in hh.body]:
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    top_level.add(id(sub))
    type_checking = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in ast.walk(node):
                type_checking.add(id(sub))
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path.name == "__init__.py", node)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for name in names:
            if name.split(".")[0] not in PACKAGES:
                continue
            while name not in known and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in known and name != module:
                yield name, node.lineno, id(node) in top_level


def test_every_import_goes_down_or_sideways_as_the_layers_allow():
    known = modules()
    wrong = []
    for module, path in known.items():
        for target, line, _ in imports(module, path, known):
            if layer(target) not in MAY_IMPORT[layer(module)]:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {module} ({layer(module)}) imports "
                             f"{target} ({layer(target)})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_module_level_import_cycle():
    known = modules()
    graph = {m: sorted({t for t, _, top in imports(m, p, known) if top and not known[t].name == "__init__.py"})
             for m, p in known.items()}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)
    assert not cycles, "module-level import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("module", ["pipeline.supervisor", "pipeline.stage_process", "pipeline.stage", "pipeline.shm"])
def test_the_kernel_exists_where_the_layers_say(module):
    assert module in modules()  # a renamed kernel module would make the checks above vacuous
