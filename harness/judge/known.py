"""Known divergences: which failing records an expected-divergence table explains, and which of
its entries a run no longer sees.

A divergence that is understood (a subgradient convention, a default, an upstream framework bug)
is data, not a red gate: the built-in table (cases/expected_divergences.toml) explains the
built-in cases, ``--expected FILE`` adds a project's own entries for any case, in the same
format. A failing record an entry matches gains ``known`` (the entry's reason, and ``upstream``
where the entry names the framework bug); the rest are new. An entry whose case, frameworks and
check all ran but that no failing record matches has vanished: a framework upgrade changed a
convention or fixed a bug, and the table should say so.

Framework-free: the tables are TOML, read by cases/expected.py.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from cases import expected
from harness.errors import HarnessError
from harness.vocab import FAILING

__all__ = ["KnownError", "apply", "entries_for", "is_new", "split"]


class KnownError(HarnessError, ValueError):
    """An --expected file that cannot be read or has a malformed entry: one line for the user."""


def entries_for(cases, files=()) -> list:
    """The entries that apply to a run: the built-in table's for its built-in cases, then every
    entry of each ``files`` (a project's own table, any case)."""
    builtin = {c.name for c in cases if getattr(c, "source", "") == "builtin"}
    entries = [e for e in _builtin_table() if e.case in builtin] if builtin else []
    for path in files or ():
        path = Path(path)
        try:
            entries += expected.load(path)
        except FileNotFoundError:
            raise KnownError(f"--expected {path}: no such file") from None
        except (OSError, ValueError) as exc:   # tomllib.TOMLDecodeError is a ValueError
            raise KnownError(f"--expected {path}: {exc}") from None
    return entries


@lru_cache(maxsize=1)
def _builtin_table() -> tuple:
    """The built-in table, read once per process (the in-process runner applies it per case)."""
    return tuple(expected.load())


def apply(records: list, entries: list) -> dict:
    """Mark every failing record an entry explains (in place); return the summary run.json keeps
    for the report: counts of new and known records and the entries no longer seen."""
    for rec in filter(_failing, records):
        entry = next((e for e in entries if e.matches(rec)), None)
        if entry is not None:
            rec["known"] = entry.reason
            if entry.upstream:
                rec.setdefault("upstream", entry.upstream)
    new, known = split(records)
    return {"new": len(new), "known": len(known), "vanished": [e.describe() for e in _vanished(records, entries)]}


def split(records: list) -> tuple:
    """(new, known): the failing records (timing aside) an entry does not / does explain."""
    failing = list(filter(_failing, records))
    return [r for r in failing if not r.get("known")], [r for r in failing if r.get("known")]


def is_new(rec: dict) -> bool:
    return _failing(rec) and not rec.get("known")


def _failing(rec: dict) -> bool:
    return rec["verdict"] in FAILING and rec.get("check") != "timing"


def _vanished(records: list, entries: list) -> list:
    """Entries whose comparison was made (a record of that case, frameworks, check and param with
    a verdict, at matching versions) and that no failing record matches: it passed everywhere."""
    made = [r for r in records if r["verdict"] in ("pass", *FAILING)]
    verdicts = {id(e): {r["verdict"] for r in made if e.matches(r)} for e in entries}
    return [e for e in entries if verdicts[id(e)] == {"pass"}]
