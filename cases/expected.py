"""Expected divergences of the built-in cases, read from cases/expected_divergences.toml.

A built-in case either agrees within tolerance in every installed framework or its
disagreement is listed there with a cause and a one-line reason: real framework differences
(subgradient conventions, defaults, NaN propagation, bugs) are findings, and listing them is
how the test suite tells a known finding from a new one. Matching is on the case, the set of
frameworks a record involves (one for fd/jvp/reference/run checks, two for pairwise/forward)
and, when the entry names them, the check and the parameter (for a divergence whose cause
differs between the parameters of one check).

A project's own table (`harness run --expected FILE`, harness/judge/known.py) has the same format; an
entry there may also pin framework versions (versions = {torch = "2.13.*"}).

Framework-free: the harness core and the tests can read it without importing a framework.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from harness import vocab
from harness.vocab import FAILING

PATH = Path(__file__).with_name("expected_divergences.toml")
#: the cause labels an entry may carry (the built-in table never lists nondeterminism: a CPU run
#: here is bitwise reproducible); the verdicts that need an entry (`skipped`, a framework lacking
#: an op, never does)
CAUSES = tuple(vocab.CAUSES)


@dataclass(frozen=True)
class Divergence:
    case: str
    frameworks: frozenset
    cause: str
    reason: str
    check: str | None = None
    #: the upstream report of a framework bug (an issue or PR), where there is one
    upstream: str | None = None
    param: str | None = None
    #: framework -> a glob its version must match ("2.13.*"): an entry pinned to the versions it
    #: was observed with, so an upgrade that keeps the divergence shows it as new
    versions: tuple = ()

    def matches(self, record: dict) -> bool:
        return (record["case"] == self.case and involved(record) == self.frameworks
                and (self.check is None or record["check"] == self.check)
                and (self.param is None or record["param"] == self.param) and self._pinned_to(record))

    def _pinned_to(self, record: dict) -> bool:
        """Do the record's framework versions match the entry's pins (no pins: any version)?"""
        have = {record.get("framework"): record.get("framework_version"),
                record.get("other_framework"): record.get("other_framework_version")}
        return all(fw not in have or fnmatchcase(str(have[fw] or ""), pattern) for fw, pattern in self.versions)

    def describe(self) -> str:
        check = (f", check {self.check}" if self.check else "") + (f", param {self.param}" if self.param else "")
        return f"{self.case} [{', '.join(sorted(self.frameworks))}{check}] {self.cause}: {self.reason}"


def involved(record: dict) -> frozenset:
    """The frameworks a record is about: its own, and the other one of a pairwise record."""
    return frozenset(filter(None, (record["framework"], record.get("other_framework"))))


def load(path: Path = PATH) -> list[Divergence]:
    """Every entry, validated: a malformed entry raises ValueError naming it."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    entries = []
    for n, raw in enumerate(data.get("divergence", []), 1):
        where = f"{path.name} entry {n} ({raw.get('case', '?')})"
        unknown = set(raw) - {"case", "frameworks", "check", "param", "cause", "reason", "upstream", "versions"}
        missing = {"case", "frameworks", "cause", "reason"} - set(raw)
        if unknown or missing:
            raise ValueError(f"{where}: unknown fields {sorted(unknown)}, missing {sorted(missing)}")
        if raw["cause"] not in CAUSES:
            raise ValueError(f"{where}: cause {raw['cause']!r} is not one of {', '.join(CAUSES)}")
        if not (isinstance(raw["frameworks"], list) and 1 <= len(raw["frameworks"]) <= 2):
            raise ValueError(f"{where}: frameworks must list one or two frameworks")
        if not str(raw["reason"]).strip():
            raise ValueError(f"{where}: the reason is empty")
        versions = raw.get("versions", {})
        if not (isinstance(versions, dict) and all(isinstance(v, str) for v in versions.values())
                and set(versions) <= set(raw["frameworks"])):
            raise ValueError(f"{where}: versions must map frameworks of the entry to version globs, "
                             'e.g. versions = {torch = "2.13.*"}')
        entries.append(Divergence(case=raw["case"], frameworks=frozenset(raw["frameworks"]),
                                  cause=raw["cause"], reason=raw["reason"].strip(), check=raw.get("check"),
                                  upstream=raw.get("upstream"), param=raw.get("param"),
                                  versions=tuple(sorted(versions.items()))))
    return entries


def unexpected(records: list, entries: list) -> list:
    """Failing records no entry explains."""
    return [r for r in records if r["verdict"] in FAILING and not any(e.matches(r) for e in entries)]


def unobserved(records: list, entries: list) -> list:
    """Entries no failing record matches any more (the divergence went away)."""
    failing = [r for r in records if r["verdict"] in FAILING]
    return [e for e in entries if not any(e.matches(r) for r in failing)]
