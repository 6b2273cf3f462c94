"""Dependencies point one way: each part of dgen imports only the parts below it (read from the source of
every module, imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

DGEN = Path(__file__).parents[1] / "dgen"
BASE = {"errors", "atomic", "rng"}  # leaf modules every part may use
# part -> the parts it may import besides itself and BASE (a part is a dgen/ subpackage or top-level module)
ALLOWED = {
    "errors": set(), "atomic": set(), "rng": set(), "presets": set(),
    "models": set(),
    "data": set(),
    "config": set(),
    "eval": {"data", "models"},
    "methods": {"data", "models", "eval", "presets"},
    "options": {"config", "methods", "data"},
    "engine": {"config", "options", "methods", "data", "models", "eval"},
    "bench": {"config", "options", "methods", "data", "models", "eval", "engine"},
    "train": {"config", "options", "methods", "data", "engine"},
    "cli": {"config", "options", "methods", "data", "eval", "engine", "bench", "train"},
    "__init__": set(), "__main__": {"cli"},
}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dgen") and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("dgen"))
    return {n for n in names if n != "dgen"}


def test_every_part_imports_only_the_parts_below_it():
    wrong = []
    for path in sorted(DGEN.rglob("*.py")):
        rel = path.relative_to(DGEN.parent).with_suffix("")
        part = _part(".".join(rel.parts))
        assert part in ALLOWED, f"{rel}: a new part of dgen; place it in ALLOWED"
        for name in _imports(path):
            used = _part(name)
            if used != part and used not in BASE and used not in ALLOWED[part]:
                wrong.append(f"{rel} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_rule_is_not_empty():
    """The check above sees real imports (a parser that found none would pass anything)."""
    assert "dgen.methods" in _imports(DGEN / "options.py") and "dgen.models.vae" in _imports(DGEN / "methods" / "vae.py")
