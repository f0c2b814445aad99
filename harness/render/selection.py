"""Which records a report shows, in which order, and how one reads in a line: the selections
and orderings every section shares (worst first by harness.vocab's severity), and the
one-line description of a record."""
from __future__ import annotations

from collections import Counter, defaultdict

from harness.judge.known import split as known_split
from harness.render import markdown as md
from harness.store.records import as_float
from harness.vocab import CHECK_ORDER, DIVERGING, VERDICTS, severity


def rel_err(r) -> float:
    """A record's max relative error as a float (0 where it has none), for ordering."""
    v = as_float(r.get("max_rel_err"))
    return v if isinstance(v, float) else 0.0


def _excess(rec) -> float:
    """How far beyond tolerance: the sort key of the divergence table."""
    rel = as_float(rec.get("max_rel_err"))
    tol = max(as_float(rec.get("atol") or 0.0), as_float(rec.get("rtol") or 0.0), 1e-300)
    return float("inf") if rel is None or isinstance(rel, str) else rel / tol


def counts(records) -> Counter:
    """Verdicts of the correctness checks (timings are measurements, not verdicts)."""
    return Counter(r["verdict"] for r in records if r["check"] != "timing")


def sort_key(r):
    return (severity(r["verdict"]), -_excess(r), r["case"], r["check"], str(r.get("param")),
            r["framework"], r.get("other_framework") or "", str(r.get("dtype")), str(r.get("device")),
            str(r.get("mode")), str(r.get("precision")), str(r.get("method") or ""))


def check_rank(check) -> int:
    """Where ``check`` comes in CHECK_ORDER (a framework's own checks before the pairs); unknown last."""
    return CHECK_ORDER.index(check) if check in CHECK_ORDER else 99


def diverging(records) -> list:
    """The records of comparisons made and failed (harness.vocab.DIVERGING), worst first."""
    return sorted((r for r in records if r["verdict"] in DIVERGING), key=sort_key)


def _by_check(records) -> defaultdict:
    """check -> Counter of verdicts, over the correctness checks (not timings)."""
    by_check = defaultdict(Counter)
    for r in records:
        if r["check"] != "timing":
            by_check[r["check"]][r["verdict"]] += 1
    return by_check


def verdict_rows(records) -> tuple:
    """The table of checks x verdicts, as numbers: ([(check, [count per VERDICTS])], [total per
    VERDICTS]), checks in CHECK_ORDER and any others after them, sorted. Built once, rendered by the
    report's summary (summary_table) and by the console (harness.render.console)."""
    by_check = _by_check(records)
    checks = [c for c in CHECK_ORDER if c in by_check] + sorted(c for c in by_check if c not in CHECK_ORDER)
    total = counts(records)
    return ([(check, [by_check[check].get(v, 0) for v in VERDICTS]) for check in checks],
            [total.get(v, 0) for v in VERDICTS])


def known_line(records, meta) -> str:
    """'3 new, 220 known (explained), 1 no longer seen': failing checks no expected entry explains,
    those one does (``known``), and the entries the run no longer sees (run.json's "expected");
    empty when the run had no expected table and nothing is known."""
    info = meta.get("expected") or {}
    new, explained = known_split(records)
    vanished = info.get("vanished") or []
    if not (new and info) and not explained and not vanished and not info.get("files"):
        return ""
    return f"{len(new)} new, {len(explained)} known (explained), {len(vanished)} no longer seen"


def frameworks_of(records, meta) -> list:
    names = list((meta.get("frameworks") or {}).keys())
    for r in records:
        for fw in (r.get("framework"), r.get("other_framework")):
            if fw and fw not in names:
                names.append(fw)
    return names


def describe(rec) -> str:
    """A failing (or any) record in one line, the way reports, the console and the pytest helper
    say it: ``case X, param w, fd torch float64 cpu: max_rel=3.3e-01 (rtol 1e-06, atol 1e-08),
    worst at (3, 2): got 0.5, expected -0.5, cause ad-bug``."""
    head = (f"case {rec['case']}, param {rec.get('param', '*')}, "
            f"{md.check_label(rec)} {md.who(rec)} {md.setting(rec)}").rstrip()
    if rec.get("method"):
        head += f" ({rec['method']})"
    verdict = rec.get("verdict")
    if verdict in ("error", "skipped"):
        reason = (rec.get("message") or "").strip().splitlines()
        return f"{head}: {verdict}: {reason[0] if reason else 'no reason given'}"
    text = f"{head}: max_rel={md.max_rel(rec, '.2e')}"
    if rec.get("rtol") is not None:
        text += f" (tolerance {md.tolerance(rec)})"
    if rec.get("worst_index") is not None or rec.get("got") is not None:
        text += f", worst at {md.where(rec)}"
    if verdict != "pass":
        text += f", cause {rec.get('cause') or 'not established'}"
        if rec.get("message"):
            text += f" ({rec['message']})"
    return text


__all__ = ["check_rank", "counts", "describe", "diverging", "frameworks_of", "known_line", "rel_err", "sort_key",
           "verdict_rows"]
