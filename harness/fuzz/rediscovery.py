"""Which divergence classes that the built-in library documents (cases/expected_divergences.toml)
a fuzz run found on its own.

A class is one documented case and the cause its divergences carry. Its ops are what the case's
loss calls (traced: harness.fuzz.trace) less the plumbing every loss has (mul by weights, sum);
the fuzz run found it when a finding, or a failing record the filters kept apart or dropped,
came from a program using all those ops with a cause of the same family. A class whose case is
native, a module case or uses ops outside the fuzzer's opset is listed as out of reach, with why.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.fuzz.generate import OPSET
from harness.fuzz.trace import TraceError, trace

#: causes that name the same kind of divergence: the judge's label, or the fuzz filter's
FAMILIES = {
    "nondiff-convention": "kink or tie", "nondeterministic": "kink or tie",
    "nan-propagation": "NaN/inf", "shared-nan": "NaN/inf",
    "precision-loss": "precision", "precision-policy": "precision", "precision-floor": "precision",
    "default-semantics": "default semantics",
    "ad-bug": "gradient wrong at a smooth point", "different-function": "gradient wrong at a smooth point",
}
#: ops a loss uses to reduce its result to a number: not what a case is about
PLUMBING = {"mul", "sum", "add", "mean", "transpose"}


@dataclass(frozen=True)
class DocumentedClass:
    case: str
    cause: str
    ops: frozenset           # empty: out of reach
    why_out: str = ""

    @property
    def family(self) -> str:
        return FAMILIES.get(self.cause, self.cause)


def documented(toml_path: Path, cases: dict) -> list:
    """The classes of the table, in its order: (case, cause) once each."""
    rows = tomllib.loads(Path(toml_path).read_text()).get("divergence", [])
    out, seen = [], set()
    for row in rows:
        key = (row["case"], row.get("cause") or "")
        if key in seen:
            continue
        seen.add(key)
        out.append(_classify(row["case"], key[1], cases.get(row["case"])))
    return out


def _classify(name: str, cause: str, case) -> DocumentedClass:
    if case is None:
        return DocumentedClass(name, cause, frozenset(), "not a built-in case")
    try:
        program = trace(case)[0]
    except TraceError as exc:
        return DocumentedClass(name, cause, frozenset(), str(exc).split(": ", 1)[-1].split(" (")[0])
    except Exception as exc:  # noqa: BLE001 - a case numpy cannot evaluate is out of reach, said why
        return DocumentedClass(name, cause, frozenset(), f"its loss does not run in numpy ({type(exc).__name__})")
    ops = set(program.ops()) - PLUMBING or set(program.ops())
    outside = sorted(o for o in ops if o not in OPSET and o != "greater")   # greater: where's condition
    if outside:
        return DocumentedClass(name, cause, frozenset(), f"uses {', '.join(outside)}, not generated")
    return DocumentedClass(name, cause, frozenset(ops))


def matches(cls: DocumentedClass, ops, label: str) -> bool:
    return bool(cls.ops) and cls.ops <= set(ops) and FAMILIES.get(label, label) == cls.family


def rediscovered(classes: list, seen: list) -> list:
    """(class, the smallest (ops, label, program text, where) that matches it, or None) per class;
    ``seen``: (ops, label, program, where) of every finding and every failing record kept."""
    out = []
    for cls in classes:
        hits = [s for s in seen if matches(cls, s[0], s[1])]
        out.append((cls, min(hits, key=lambda s: s[2].size()) if hits else None))
    return out


__all__ = ["DocumentedClass", "FAMILIES", "documented", "matches", "rediscovered"]
