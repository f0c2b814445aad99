"""The layout's rules, checked on the source: folders are stages and imports run one way
(README, "Architecture"), harness/ never imports a framework, no module imports another's
private name, and every module says what it exports."""
import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

HARNESS = ROOT / "harness"
#: the stages from the top: a module may import its own stage and any stage below it
LAYERS = [("cli",), ("fuzz",), ("run",), ("render", "worker"), ("judge",), ("plan",), ("define",), ("store",)]
#: top-level modules: the public API (may use every stage) and the vocabulary every stage shares
API = {"__init__", "__main__", "testing"}
FOUNDATION = {"case", "vocab", "errors"}
FRAMEWORKS = {"torch", "jax", "jaxlib", "tensorflow", "keras", "flax", "equinox", "optax"}


def _modules():
    return sorted(p for p in HARNESS.rglob("*.py") if "__pycache__" not in p.parts)


def _name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _level(module: str):
    """(rank, stage) of a harness module: lower rank = lower in the stack."""
    parts = module.split(".")[1:]
    if len(parts) == 1 or not parts:
        name = parts[0] if parts else "__init__"
        return (len(LAYERS) + 1, "api") if name in API else (-1, "foundation")
    for i, layer in enumerate(LAYERS):
        if parts[0] in layer:
            return len(LAYERS) - i, parts[0]
    raise AssertionError(f"{module} is in no stage folder")


def _imports(path: Path):
    """(imported module, names, line) for every import in the file, at any depth."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _name(path).rsplit(".", node.level)[0]
                module = package + ("." + node.module if node.module else "")
            else:
                module = node.module or ""
            yield module, [a.name for a in node.names], node.lineno


def _harness_target(module: str, names: list) -> list:
    """The harness modules an import reaches (``from harness.judge import known`` -> harness.judge.known)."""
    if module == "harness":
        return [f"harness.{n}" for n in names]
    if module.startswith("harness."):
        parts = module.split(".")
        if len(parts) == 2 and parts[1] in {s for layer in LAYERS for s in layer}:
            return [f"{module}.{n}" for n in names]
        return [module]
    return []


def test_every_module_is_in_a_stage_or_is_the_api_or_the_vocabulary():
    for path in _modules():
        _level(_name(path))   # raises for a module in no stage


def test_imports_run_one_way_from_the_top():
    upward = []
    for path in _modules():
        me = _name(path)
        rank, stage = _level(me)
        for module, names, line in _imports(path):
            for target in _harness_target(module, names):
                t_rank, t_stage = _level(target)
                if t_stage == stage or t_stage == "foundation" or stage == "api":
                    continue
                if t_rank >= rank:
                    upward.append(f"{path.relative_to(ROOT)}:{line} ({stage}) imports {target} ({t_stage})")
    assert not upward, "\n".join(upward)


def test_the_foundation_imports_no_stage():
    for name in FOUNDATION:
        for module, names, line in _imports(HARNESS / f"{name}.py"):
            targets = _harness_target(module, names)
            assert all(_level(t)[1] == "foundation" for t in targets), (name, line, targets)


def test_harness_never_imports_a_framework():
    found = [f"{p.relative_to(ROOT)}:{line} imports {m}" for p in _modules() for m, _, line in _imports(p)
             if m.split(".")[0] in FRAMEWORKS]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("tree", ["harness", "adapters"])
def test_no_private_name_is_imported_from_another_module(tree):
    found = []
    for path in sorted((ROOT / tree).rglob("*.py")):
        for module, names, line in _imports(path):
            if module.split(".")[0] not in ("harness", "adapters", "cases"):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            found += [f"{path.relative_to(ROOT)}:{line} imports {n} from {module}" for n in private]
    assert not found, "\n".join(found)


def test_every_module_lists_its_public_names():
    missing = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        public = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")]
        has_all = any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets)
                      for n in tree.body)
        if public and not has_all:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, missing


def test_the_readme_lists_the_checks_of_the_vocabulary_in_its_order():
    from harness.vocab import CHECKS

    text = (ROOT / "README.md").read_text()
    table = text[text.index("## What it checks"):text.index("Finite differences (`harness/worker/fd.py`)")]
    listed = [line.split("`")[1] for line in table.splitlines() if line.startswith("| `")]
    assert listed == list(CHECKS)
