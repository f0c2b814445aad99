"""Finding cases: the built-in library, users' case files, and selection by name, tag or glob.

Both the parent (to plan) and each worker (to run) load cases the same way, so a case is
identified everywhere by (name, source): source is 'builtin' or the absolute path of the file.
`FILE.py::NAME` (pytest's spelling) selects within one file; a name that matches nothing is an
error that suggests the closest names ("did you mean"), never an empty selection.
"""
from __future__ import annotations

import difflib
import fnmatch
import hashlib
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path

from harness.case import Case, CaseError

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
        # the file's own folder is importable: `import model` beside a case file finds model.py
        # there, at import time and later inside the case's functions. Appended, not prepended,
        # so a file or folder there never shadows the harness's own packages or an installed one
        folder = str(path.parent)
        if folder not in sys.path:
            sys.path.append(folder)
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


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x' or 'y'?)' naming the closest of ``choices``, or '' when none is close."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def matches(case: Case, token: str) -> bool:
    """Does a --cases token (a name, a tag or a glob over names) pick ``case``?"""
    return case.name == token or token in case.tags or fnmatch.fnmatchcase(case.name, token)


def in_file(token: str) -> list[Case]:
    """`FILE.py::NAME`: the cases of FILE that NAME (a name, tag or glob) picks; none is an error."""
    path, _, name = token.partition("::")
    name = name.strip()
    if not name:
        raise CaseError(f"{token!r}: name a case after '::' (FILE.py::NAME)")
    pool = load_file(path)
    picked = [c for c in pool if matches(c, name)]
    if not picked:
        names = [c.name for c in pool]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        raise CaseError(f"no case {name!r} in {pool[0].source}{did_you_mean(name, names)}; its cases: {shown}")
    return picked


def select(spec: str | None, everything: bool = False, quick: bool = False) -> list[Case]:
    """Resolve a --cases spec: comma-separated built-in names, tags, globs, case files or
    FILE.py::NAME.

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
        if "::" in token:
            matched = in_file(token)
        elif looks_like_path(token):
            matched = load_file(token)
        else:
            matched = [c for c in builtins if matches(c, token)]
            if not matched:
                hint = ", ".join(sorted(tags))
                raise CaseError(f"unknown case, tag or file: {token!r}"
                                f"{did_you_mean(token, [c.name for c in builtins] + sorted(tags))} "
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


__all__ = ["BUILTIN", "builtin_cases", "cases_in", "did_you_mean", "find", "in_file", "load_file", "looks_like_path",
           "matches", "select"]
