"""The op sweep against its expected divergences.

Every built-in `ops` case runs in every installed framework (in-process, CPU, float64 with
finite differences and float32) and either agrees within tolerance or fails exactly as
cases/expected_divergences.toml says: a new divergence fails here, and so does a listed one
that is no longer observed (a framework upgrade changed a convention or fixed a bug), each
naming the case, framework(s), check, parameter and cause.
"""
import numpy as np
import pytest

from adapters import FRAMEWORKS
from cases import expected
from harness.define.loader import builtin_cases
from harness.define.ops_spec import OPS
from harness.judge import coverage
from harness.run.inprocess import adapter, installed, run_case

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")

BUILTIN = builtin_cases()
OP_CASES = [c for c in BUILTIN if "ops" in c.tags]
ENTRIES = expected.load()
INSTALLED = frozenset(installed())


def _where(record) -> str:
    fws = " vs ".join(sorted(expected.involved(record)))
    return (f"{record['case']}: check {record['check']}, {fws}, {record['dtype']}, param {record['param']}: "
            f"{record['verdict']}, cause {record.get('cause')}")


def _new(record) -> str:
    detail = record.get("message") or ""
    if record.get("got") is not None:
        detail = (f"got {record['got']:.6g}, expected {record['expected']:.6g} at "
                  f"{record.get('worst_index')}; {detail}")
    return f"NEW      {_where(record)} ({detail.strip('; ')})"


def _gone(entry) -> str:
    return f"NOT SEEN {entry.describe()} -- the frameworks now agree: remove or update the entry"


def test_entries_name_built_in_cases_and_known_frameworks():
    names = {c.name for c in BUILTIN}
    bad = [e.describe() for e in ENTRIES if e.case not in names or not e.frameworks <= set(FRAMEWORKS)]
    assert not bad, "entries for unknown cases or frameworks:\n" + "\n".join(bad)
    keys = [(e.case, e.frameworks, e.check, e.param) for e in ENTRIES]
    dupes = sorted({f"{k[0]} {sorted(k[1])} {k[2]} {k[3]}" for k in keys if keys.count(k) > 1})
    assert not dupes, f"duplicate entries: {dupes}"


@pytest.mark.parametrize("text, complaint", [
    ('case = "x"\nframeworks = ["jax"]\ncause = "bad-luck"\nreason = "r"', "cause"),
    ('case = "x"\nframeworks = ["jax"]\ncause = "ad-bug"', "missing"),
    ('case = "x"\nframeworks = ["jax", "torch", "tensorflow"]\ncause = "ad-bug"\nreason = "r"', "frameworks"),
    ('case = "x"\nframeworks = ["jax"]\ncause = "ad-bug"\nreason = " "', "reason"),
])
def test_malformed_entries_are_refused(tmp_path, text, complaint):
    path = tmp_path / "expected.toml"
    path.write_text("[[divergence]]\n" + text + "\n")
    with pytest.raises(ValueError, match=complaint):
        expected.load(path)


def test_matching_is_on_case_framework_set_and_check():
    entry = expected.Divergence("c", frozenset({"jax", "torch"}), "ad-bug", "r", check="pairwise")
    record = {"case": "c", "framework": "torch", "other_framework": "jax", "check": "pairwise",
              "verdict": "diverge"}
    assert entry.matches(record)
    assert not entry.matches({**record, "check": "fd", "other_framework": None})
    assert not entry.matches({**record, "other_framework": "tensorflow"})
    assert expected.unexpected([record, {**record, "case": "d"}], [entry]) == [{**record, "case": "d"}]
    assert expected.unobserved([{**record, "verdict": "pass"}], [entry]) == [entry]


class _Recording:
    """An ops namespace that remembers which ops a loss used."""

    def __init__(self, ops):
        self._ops, self.used = ops, set()

    def __getattr__(self, name):
        self.used.add(name)
        return getattr(self._ops, name)


def test_every_neutral_op_is_used_by_an_op_case():
    if not INSTALLED:
        pytest.skip("no framework installed")
    a = adapter("torch" if "torch" in INSTALLED else sorted(INSTALLED)[0])
    ops = _Recording(a.ops)
    for case in (c for c in OP_CASES if c.loss is not None):
        params, inputs, _ = case.build(np.random.default_rng(0))
        try:
            case.loss(ops, *({k: a.asarray(v, "float64") for k, v in d.items()} for d in (params, inputs)))
        except Exception:  # noqa: BLE001 - an op this framework lacks: the attribute was still used
            pass
    missing = sorted(set(OPS) - ops.used)
    assert not missing, f"ops no op case exercises: {missing}"


@pytest.mark.parametrize("case", OP_CASES, ids=[c.name for c in OP_CASES])
def test_op_case_agrees_or_diverges_as_expected(case):
    if not INSTALLED:
        pytest.skip("no framework installed")
    rows = []
    records = run_case(case, dtypes=("float64", "float32"), observations=rows)
    entries = [e for e in ENTRIES if e.case == case.name and e.frameworks <= INSTALLED]
    problems = [_new(r) for r in expected.unexpected(records, entries)]
    problems += [_gone(e) for e in expected.unobserved(records, entries)]
    problems += [f"SKIPPED WITHOUT A REASON {_where(r)}" for r in records
                 if r["verdict"] == "skipped" and not (r.get("message") or "").strip()]
    # the completeness invariant over the op library: no check missing, none extra
    problems += [f"NOT RECORDED {k}" for k in coverage.gaps(records, rows, {case.name: case})]
    problems += [f"NOT PLANNED {k}" for k in coverage.extras(records, rows, {case.name: case})]
    ran = {r["framework"] for r in records}
    problems += [f"NO RECORD for {fw}" for fw in sorted(set(case.frameworks(INSTALLED)) - ran)]
    assert not problems, "\n".join(problems)


def test_an_edge_point_is_the_same_at_every_seed():
    """A case whose params are all fixed edge values draws nothing from the run's seed (its
    weights included), so its verdicts cannot flip with --seed."""
    fixed = [c for c in OP_CASES if "edge" in c.tags
             and all(np.array_equal(a, b) for a, b in zip(c.build(np.random.default_rng(1))[0].values(),
                                                          c.build(np.random.default_rng(2))[0].values()))]
    assert len(fixed) >= 20
    for case in fixed:
        one, two = (case.build(np.random.default_rng(s)) for s in (1, 2))
        for a, b in zip(one[1].values(), two[1].values()):
            assert np.array_equal(np.asarray(a), np.asarray(b)), case.name


def test_an_entry_naming_a_param_matches_only_that_param():
    entry = expected.Divergence(case="c", frameworks=frozenset({"jax", "torch"}), cause="default-semantics",
                                reason="r", check="pairwise", param="v")
    rec = {"case": "c", "framework": "jax", "other_framework": "torch", "check": "pairwise", "param": "v"}
    assert entry.matches(rec) and not entry.matches({**rec, "param": "q"})
