"""Finding cases: the built-in library, users' case files, and selection by name, tag or glob.

Both the parent (to plan) and each worker (to run) load cases the same way, so a case is
identified everywhere by (name, source): source is 'builtin' or the absolute path of the file.
"""
from __future__ import annotations

import fnmatch
import hashlib
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path

from .case import Case, CaseError

BUILTIN = "builtin"


def builtin_cases() -> list[Case]:
    """Every case of the built-in library (cases/*.py), in a stable order."""
    package = importlib.import_module("cases")
    found = []
    for module_name in package.MODULES:
        module = importlib.import_module(f"cases.{module_name}")
        found += [_with_source(c, BUILTIN) for c in getattr(module, "CASES", [])]
    return _unique(found, "the built-in library")


def load_file(path: str | Path) -> list[Case]:
    """Import a user's case file and collect its Case objects (module level or a CASES list)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise CaseError(f"case file not found: {path}")
    if path.suffix != ".py":
        raise CaseError(f"case file must be a .py file: {path}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    module_name = f"_harness_user_cases_{digest}"
    if module_name in sys.modules:
        module = sys.modules[module_name]
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        # the harness writes only under its output folder: no __pycache__ beside the user's file
        dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True
        try:
            spec.loader.exec_module(module)
        except CaseError as exc:
            raise CaseError(f"{path}: {exc}") from None
        except SyntaxError as exc:
            raise CaseError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
        except Exception as exc:  # noqa: BLE001 - any failure of user code is one line for the user
            where = traceback.extract_tb(exc.__traceback__)[-1]
            raise CaseError(f"{path}: importing the case file failed at line {where.lineno}: "
                            f"{type(exc).__name__}: {exc}") from None
        finally:
            sys.dont_write_bytecode = dont_write
        sys.modules[module_name] = module
    cases = list(getattr(module, "CASES", []))
    for value in vars(module).values():
        if isinstance(value, Case) and all(value is not c for c in cases):
            cases.append(value)
    if not cases:
        raise CaseError(f"{path}: defines no Case (module-level Case objects or a list CASES)")
    bad = [c for c in cases if not isinstance(c, Case)]
    if bad:
        raise CaseError(f"{path}: CASES holds {type(bad[0]).__name__}, not Case")
    return _unique([_with_source(c, str(path)) for c in cases], str(path))


def _with_source(case: Case, source: str) -> Case:
    object.__setattr__(case, "source", source)
    return case


def _unique(cases, where):
    seen = set()
    for c in cases:
        if c.name in seen:
            raise CaseError(f"duplicate case name {c.name!r} in {where}")
        seen.add(c.name)
    return cases


def looks_like_path(token: str) -> bool:
    return token.endswith(".py") or "/" in token or Path(token).is_file()


def select(spec: str | None, everything: bool = False, quick: bool = False) -> list[Case]:
    """Resolve a --cases spec: comma-separated built-in names, tags, globs or case files.

    No spec: the built-in cases tagged 'default' ('quick' with quick, all with everything).
    An unknown token raises CaseError naming it and what was available.
    """
    builtins = builtin_cases()
    if not spec:
        if everything:
            return builtins
        tag = "quick" if quick else "default"
        return [c for c in builtins if tag in c.tags]
    chosen: list[Case] = []
    tags = {t for c in builtins for t in c.tags}
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        if looks_like_path(token):
            matched = load_file(token)
        else:
            matched = [c for c in builtins
                       if c.name == token or token in c.tags or fnmatch.fnmatchcase(c.name, token)]
            if not matched:
                hint = ", ".join(sorted(tags))
                raise CaseError(f"unknown case, tag or file: {token!r} "
                                f"(see `python -m harness list`; tags: {hint})")
        chosen += [c for c in matched if all(c is not k for k in chosen)]
    names = [c.name for c in chosen]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CaseError(f"duplicate case names across the selection: {', '.join(dupes)}")
    if quick:
        chosen = [c for c in chosen if "slow" not in c.tags]
    return chosen


def cases_in(source: str) -> list[Case]:
    """Every case of a source: 'builtin' (the built-in library) or the path of a case file."""
    return builtin_cases() if source == BUILTIN else load_file(source)


def find(name: str, source: str) -> Case:
    """The case a worker was asked to run."""
    for case in cases_in(source):
        if case.name == name:
            return case
    raise CaseError(f"case {name!r} not found in {source}")
