"""The import rule docs/ARCHITECTURE.md states, checked on the source with `ast` (no import runs).

Every cotforge module sits in a layer (LAYERS, floor first). An import may point to the module's own
layer or one below, never above. The only upward imports are the plug points in PLUG_POINTS: a lazy
import inside a function, where a lower layer picks an implementation by name (the Ray executor, the
judge stage); each is listed with its reason, and a new one fails this test until it is listed too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cotforge"
LAYERS = [
    # the floor: errors, records, run folders, text parsing, progress, shipped resources
    {"cotforge", "cotforge.errors", "cotforge.schema", "cotforge.parsing", "cotforge.progress",
     "cotforge.resources", "cotforge.io"},
    {"cotforge.query", "cotforge.engines"},  # read any run; engines
    {"cotforge.checks"},
    {"cotforge.judge", "cotforge.stats", "cotforge.tally"},  # a model after the rule checks; a run's counts
    {"cotforge.executors", "cotforge.formatters", "cotforge.datacard"},
    {"cotforge.generate", "cotforge.filtering", "cotforge.rewrite", "cotforge.export", "cotforge.mix",
     "cotforge.evaluation", "cotforge.view", "cotforge.train"},  # the stages
    {"cotforge.cluster"},  # the stages on Ray: plugs into generate and filter
    {"cotforge.cli"},  # a thin layer over all of them
]
PLUG_POINTS = {  # (importer, imported): why the lower layer reaches up, lazily
    ("cotforge.checks.chain", "cotforge.judge.stage"): "a preset's `judge` entry builds the judge stage",
    ("cotforge.generate.options", "cotforge.cluster.generate"): "`--executor ray` for generate",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_of(module: str) -> int:
    """The layer of `module`: its own entry, else its package's (cotforge.io.rundir -> cotforge.io)."""
    name = module
    while name:
        for index, layer in enumerate(LAYERS):
            if name in layer and (name != "cotforge" or module == "cotforge"):
                return index
        name = name.rpartition(".")[0]
    raise AssertionError(f"{module}: in no layer of tests/test_layout.py (add it, and to ARCHITECTURE.md)")


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported cotforge module, line, inside a function) for every import statement in `path`."""
    found = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.level == 0 and (child.module or "").startswith("cotforge"):
                # `from cotforge.train import rewards` imports the module cotforge.train.rewards, not the package
                found.extend((submodule if is_module(submodule := f"{child.module}.{a.name}") else child.module,
                              child.lineno, inner) for a in child.names)
            elif isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, inner) for a in child.names if a.name.startswith("cotforge"))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def test_imports_point_down_the_layers_except_at_the_plug_points():
    upward, unused_plugs = [], set(PLUG_POINTS)
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for imported, line, lazy in imports(path):
            if layer_of(imported) <= layer_of(importer):
                continue
            if lazy and (importer, imported) in PLUG_POINTS:
                unused_plugs.discard((importer, imported))
                continue
            upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {importer} imports {imported} "
                          f"(layer {layer_of(importer)} -> {layer_of(imported)})")
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)
    assert not unused_plugs, f"plug points no longer used (remove them): {sorted(unused_plugs)}"


def test_every_module_is_in_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path))
