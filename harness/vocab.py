"""The harness's vocabulary, written once: checks, verdicts, causes and what names a record.

Every stage speaks it (a worker tags its observation, the judge makes records, a report orders
and explains them, a gate decides on them), so it sits below them all and imports nothing.
"""
from __future__ import annotations

#: the checks, in the order a report lists them (a framework's own checks before the pairs), and
#: what each compares; the ``check`` field of a record
CHECKS = {
    "run": "a task that could not run at all (worker crash, timeout, framework missing); the reason is given",
    "fd": "reverse-mode gradient vs central finite differences (float64, CPU, eager): one step per element "
          "first, Richardson-extrapolated two steps with an error estimate wherever the first does not settle "
          "the element; the FD error estimate is added to the tolerance, and non-differentiable elements are "
          "judged by their one-sided limits",
    "complex": "the reverse-mode gradient vs the complex-step derivative Im f(x + ih) / h, exact to rounding "
               "where the function is complex-analytic (`--fd complex`)",
    "jvp": "forward-mode derivative along a seeded random direction vs ⟨reverse-mode gradient, direction⟩",
    "hvp": "Hessian-vector products (forward-over-reverse, reverse-over-reverse) vs finite differences of "
           "the gradient, for cases tagged `twice-differentiable`",
    "determinism": "the same gradient computed twice in the same process (bitwise on CPU)",
    "reference": "a gradient at another dtype, device or mode vs the same framework's float64 CPU gradient",
    "compiled": "a compiled gradient (torch.compile, jax.jit, tf.function(jit_compile=True)) vs the eager one",
    "pairwise": "two frameworks at the same device, dtype, mode and precision",
    "forward": "the two frameworks' forward values (the loss) in each pairwise setting: where these differ, "
               "the frameworks compute different functions",
    "layer_forward": "module cases: each layer's output in two frameworks at the same setting, layers matched "
                     "through the weight mapping; the first layer whose input agrees and output does not is "
                     "marked as the first divergence",
    "layer_grad": "module cases: the loss's gradient with respect to each layer's output in two frameworks; the "
                  "last layer (in forward order) whose output gradient diverges is marked: above it the "
                  "gradient flowing back agrees",
    "timing": "forward and forward+backward median time per call: a measurement, not a verdict",
}
#: the correctness checks in report order (timing is a measurement, listed apart)
CHECK_ORDER = tuple(c for c in CHECKS if c != "timing")
#: the phases a timing record measures (its ``param``)
TIMING_PHASES = ("forward", "forward+backward")
#: the case tag that asks for second-order checks, and the HVP methods each such case is checked by
SECOND_ORDER_TAG = "twice-differentiable"
HVP_METHODS = ("fwd-over-rev", "rev-over-rev")

#: every verdict a record can carry, in the order counts are shown
VERDICTS = ("pass", "diverge", "nan", "error", "skipped")
#: verdicts of a comparison made and failed: the divergences a report lists
DIVERGING = ("diverge", "nan")
#: verdicts that fail a gate by default (`--fail-on`, `assert_gradients_agree`): the divergences
#: and a comparison that could not be made, which must never pass silently
FAILING = ("diverge", "nan", "error")
DEFAULT_FAIL_ON = ",".join(FAILING)
#: verdicts, worst first: the order of every list of records
SEVERITY = {"nan": 0, "error": 1, "diverge": 2, "skipped": 3, "pass": 4}


def severity(verdict: str) -> int:
    """Rank of ``verdict``, worst (NaN) first; an unknown verdict after every known one."""
    return SEVERITY.get(verdict, 9)


def cell_rank(verdict: str) -> int:
    """Which verdict speaks for a table cell of several records: the worst, except that a pass
    shows over a skip (a cell that passed the checks it ran is ✓, its skips counted beside)."""
    return {"pass": SEVERITY["skipped"], "skipped": SEVERITY["pass"]}.get(verdict, severity(verdict))


def flip_rank(verdict: str) -> int:
    """How good a verdict is when two runs are compared: as ``severity``, but NaN and error are
    one level (neither yields a usable gradient), so a flip between them is neither worse nor better."""
    return max(SEVERITY.get(verdict, 0), SEVERITY["error"])


#: causes: why a failing record fails (harness/judge/causes.py names them from the evidence)
CAUSES = {
    "ad-bug": "autodiff disagrees with finite differences at a point where the function is smooth",
    "nondiff-convention": "the point is not differentiable and frameworks pick different (sub)gradients there "
                          "(or NaN)",
    "precision-policy": "float32 work ran in reduced precision (TF32 or a bf16 matmul pass) under the framework's "
                        "default policy",
    "precision-loss": "a float64 result accurate only to about float32 precision (a constant or an intermediate "
                      "rounded through float32)",
    "default-semantics": "the case compares native defaults that differ between frameworks (an approximation, an "
                         "epsilon)",
    "different-function": "each framework agrees with its own finite differences, but their forward values differ: "
                          "the frameworks compute different functions",
    "nan-propagation": "NaN or inf in one result only (e.g. from an unselected `where` branch)",
    "nondeterminism": "the same computation twice gave different gradients",
    "framework-error": "the framework's own autodiff raised on standard ops (a framework bug, not the case's code)",
    "custom-gradient": "a custom gradient the case defines cannot be differentiated as the case declares",
    "unused-parameter": "the loss does not depend on a parameter in one framework (its gradient is identically 0 "
                        "there, not in the other): a port that never uses the weight, or a name that does not "
                        "reach the model",
}

#: what names one task, and so one observation: a case on a framework in one setting
TASK_FIELDS = ("case", "framework", "device", "dtype", "mode", "precision")
#: what names one record: its task, the check, the parameter (``*``: all at once), the method
#: (HVPs) and the other framework (pairwise, forward); every record has these (None where n/a)
RECORD_FIELDS = TASK_FIELDS + ("check", "param", "method", "other_framework")


def task_key(row: dict, drop: tuple = ()) -> tuple:
    """The task an observation or a record belongs to; ``drop``: fields left out (e.g.
    ``("framework",)``: one setting, every framework in it)."""
    return tuple(row.get(f) for f in TASK_FIELDS if f not in drop)


def record_key(record: dict, drop: tuple = ()) -> tuple:
    """The identity of a record, in RECORD_FIELDS order; ``drop``: fields left out, to pair a
    record with its twin in another setting (e.g. ``("precision",)``)."""
    return tuple(record.get(f) for f in RECORD_FIELDS if f not in drop)


def sortable(key: tuple) -> tuple:
    """A key as strings (None as ""), so keys with missing fields sort beside the others."""
    return tuple("" if v is None else str(v) for v in key)


__all__ = ["CAUSES", "CHECKS", "CHECK_ORDER", "DEFAULT_FAIL_ON", "DIVERGING", "FAILING", "HVP_METHODS",
           "RECORD_FIELDS", "SECOND_ORDER_TAG", "SEVERITY", "TASK_FIELDS", "TIMING_PHASES", "VERDICTS",
           "cell_rank", "flip_rank", "record_key", "severity", "sortable", "task_key"]
