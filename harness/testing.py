"""pytest integration: pin "my model's gradients agree across frameworks" in a project's own tests.

    from harness.testing import assert_gradients_agree

    def test_my_loss_gradients():
        assert_gradients_agree(make=make, native={"torch": torch_loss, "jax": jax_loss},
                               dtypes=("float64", "float32"))

The case runs in this process (harness.run.inprocess.run_case: every framework's adapter loaded here,
no worker processes) with the same checks and verdicts as `harness run`: finite differences,
forward mode, second order for cases tagged `twice-differentiable`, the float64 reference and
framework vs framework. A failure raises AssertionError with one line per failing check, in the
report's own words: ``case X, param w, fd torch float64 cpu: max_rel=…, worst at (3, 2): got …,
expected …, cause …``.
"""
from __future__ import annotations

import numbers
import sys

from adapters import FRAMEWORKS

from .case import Case
from harness.render.selection import check_rank, describe, sort_key
from harness.vocab import FAILING

DEFAULT_FAIL_ON = FAILING
#: at most this many failing checks are spelled out in the message
MESSAGE_LINES = 20


def _tolerance(tolerance, dtypes) -> dict | None:
    """A number (rtol for every dtype), {"rtol": .., "atol": ..} (every dtype) or {dtype: {...}}."""
    if tolerance is None:
        return None
    if isinstance(tolerance, numbers.Real):
        return {d: {"rtol": float(tolerance)} for d in dtypes}
    if isinstance(tolerance, dict) and tolerance and set(tolerance) <= {"rtol", "atol"}:
        return {d: dict(tolerance) for d in dtypes}
    if isinstance(tolerance, dict):
        return tolerance
    raise TypeError("tolerance: a number (rtol), {'rtol': .., 'atol': ..} or {dtype: {'rtol': .., 'atol': ..}}")


def _name_for(native, loss) -> str:
    fn = loss or next(iter((native or {}).values()), None)
    return getattr(fn, "__name__", "case").strip("<>").replace(" ", "_") or "case"


def _skip_or_raise(message: str):
    pytest = sys.modules.get("pytest")
    if pytest is not None:
        pytest.skip(message)
    raise RuntimeError(message)


def assert_gradients_agree(case: Case | None = None, *, make=None, loss=None, native=None, wrt=None,
                           layout=None, name=None, tags=(), frameworks=None,
                           dtypes=("float64", "float32"), modes=("eager",), tolerance=None, seed=0,
                           fd_mode="auto", fail_on=DEFAULT_FAIL_ON, missing="skip") -> list:
    """Run ``case`` (or the case made of ``make`` and ``loss``/``native``) on ``frameworks`` (default:
    every installed one it has an implementation for) at ``dtypes`` on CPU, and raise AssertionError
    if any check's verdict is in ``fail_on``. Returns the records (dicts as in results.jsonl).

    ``tolerance``: a number (rtol for every dtype), ``{"rtol": .., "atol": ..}`` for every dtype, or
    ``{dtype: {...}}`` as in ``Case(tolerance=...)``; it replaces the case's own. ``missing``: what to
    do when a framework named in ``frameworks`` is not installed: "skip" (pytest.skip; outside
    pytest a RuntimeError) or "ignore" (run the others).
    """
    from harness.run import inprocess

    dtypes = tuple(dtypes)
    if case is None:
        if make is None or (loss is None and not native):
            raise TypeError("assert_gradients_agree: give a Case, or make= with loss= and/or native=")
        case = Case(name=name or _name_for(native, loss), make=make, loss=loss, native=native, wrt=wrt,
                    layout=layout, tags=tuple(tags), tolerance=_tolerance(tolerance, dtypes))
    elif tolerance is not None:
        import dataclasses

        case = dataclasses.replace(case, tolerance=_tolerance(tolerance, dtypes))
    installed = inprocess.installed()
    if frameworks is None:
        chosen = case.frameworks(installed)
        if not chosen:
            _skip_or_raise(f"case {case.name}: none of its frameworks is installed "
                           f"({', '.join(case.frameworks(list(FRAMEWORKS)))})")
    else:
        chosen = list(frameworks)
        absent = [fw for fw in chosen if fw not in installed]
        if absent and missing == "skip":
            _skip_or_raise(f"case {case.name}: {', '.join(absent)} not installed")
        chosen = [fw for fw in chosen if fw in installed]
        unimplemented = [fw for fw in chosen if fw not in case.frameworks([fw])]
        if unimplemented:
            raise TypeError(f"case {case.name} has no implementation for {', '.join(unimplemented)} "
                            f"(give loss= for the neutral ops, or native={{fw: fn}})")
    records = inprocess.run_case(case, frameworks=chosen, dtypes=dtypes, modes=tuple(modes), seed=seed,
                                 fd_mode=fd_mode)
    # the root cause first: a framework's own checks (fd, jvp, ...) before the pairs they spoil
    # a known framework bug with an upstream report (cases/expected_divergences.toml) is reported in
    # the records but fails nothing, as in `harness run`: only its framework can fix it
    bad = sorted((r for r in records if r["verdict"] in fail_on and not r.get("upstream")),
                 key=lambda r: (check_rank(r["check"]), sort_key(r)))
    if bad:
        lines = [describe(r) for r in bad[:MESSAGE_LINES]]
        if len(bad) > MESSAGE_LINES:
            lines.append(f"... and {len(bad) - MESSAGE_LINES} more")
        raise AssertionError(f"gradients of case {case.name} disagree: {len(bad)} failing check(s) "
                             f"({', '.join(chosen)}; {', '.join(dtypes)})\n" + "\n".join(lines))
    return records


__all__ = ["DEFAULT_FAIL_ON", "MESSAGE_LINES", "assert_gradients_agree"]
