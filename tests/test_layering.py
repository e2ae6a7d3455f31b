"""Layering of the lightface package: data flows pipelines -> library -> ops, nothing imports upward.

Every import statement of every module under ``lightface/`` is read with ``ast``, the ones
inside functions too (a function-local import is still a dependency; it only hides it).
"""
import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lightface"

#: the layer order, bottom first; a module may import from its own layer (without a package
#: cycle) and from the layers below it, never from a layer above
LAYERS: List[Tuple[str, ...]] = [
    ("utils", "ops"),  # no lightface imports: checkpoint I/O, face templates, fused ops
    ("nn",),  # layers
    ("models",),  # networks, registry, checkpoints, shipped weights, identity networks
    ("losses", "eval", "data", "distill"),  # objectives, metrics, datasets
    ("engine",),  # the training engine and its tasks
    ("apps", "restore", "gallery", "embed", "export"),  # applications (pipelines/ sit on top)
]
RANK: Dict[str, int] = {pkg: rank for rank, group in enumerate(LAYERS) for pkg in group}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> List[Tuple[int, str]]:
    """``(line, imported lightface module)`` for every import in the file, nested ones included."""
    module = _module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:  # `from .. import ops` imports the module lightface.ops
                target = f"{base}.{alias.name}"
                found.append((node.lineno, target if _exists(target) else base))
    return [(line, name) for line, name in found if name == "lightface" or name.startswith("lightface.")]


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""  # "" = the lightface package itself (its __init__)


def _edges() -> Dict[Tuple[str, str], List[str]]:
    """(importing subpackage, imported subpackage) -> the places, for imports across subpackages."""
    edges: Dict[Tuple[str, str], List[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        src = _subpackage(_module_name(path))
        for line, target in _imports(path):
            dst = _subpackage(target)
            if src != dst:
                edges[(src, dst)].append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    return edges


def test_every_subpackage_has_a_layer():
    subpackages = {_subpackage(_module_name(p)) for p in PACKAGE.rglob("*.py")} - {""}
    missing = sorted(subpackages - set(RANK))
    assert not missing, f"add {missing} to LAYERS in tests/test_layering.py (where do they sit?)"


def test_the_package_root_imports_nothing():
    """``lightface/__init__.py`` only names its lazy attributes; any module may import it (``__version__``)."""
    assert _imports(PACKAGE / "__init__.py") == []


def test_nothing_imports_upward():
    upward = [place for (src, dst), places in _edges().items()
              if src and dst and RANK.get(dst, -1) > RANK.get(src, len(LAYERS)) for place in places]
    assert not upward, "imports from a higher layer:\n" + "\n".join(sorted(upward))


def test_bottom_layers_import_only_below_them():
    """ops, nn and models (and the utils they use) never reach data, losses, eval, engine or the apps."""
    allowed = {"utils": set(), "ops": set(), "nn": {"ops"}, "models": {"nn", "ops", "utils"}}
    bad = [place for (src, dst), places in _edges().items()
           if src in allowed and dst and dst not in allowed[src] for place in places]
    assert not bad, "\n".join(sorted(bad))


def test_no_package_cycles():
    graph: Dict[str, Set[str]] = defaultdict(set)
    for (src, dst) in _edges():
        if src and dst:
            graph[src].add(dst)
    cycles = []

    def visit(node: str, path: List[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycle = path[path.index(nxt):] + [nxt]
                if min(cycle[:-1]) == cycle[0]:  # report each cycle once
                    cycles.append(" -> ".join(cycle))
            elif len(path) < len(graph) + 1:
                visit(nxt, path + [nxt])

    for start in sorted(graph):
        visit(start, [start])
    edges = _edges()
    detail = [p for c in cycles for a, b in zip(c.split(" -> "), c.split(" -> ")[1:]) for p in edges[(a, b)][:3]]
    assert not cycles, "package cycles: " + "; ".join(sorted(set(cycles))) + "\n" + "\n".join(detail)


@pytest.mark.parametrize("src,dst", [("models", "engine"), ("data", "engine"), ("eval", "losses"), ("models", "data")])
def test_the_cycles_issue_14_found_stay_gone(src, dst):
    assert (src, dst) not in _edges()
