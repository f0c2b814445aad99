"""Which timing may speak for a framework's speed: the mode its users run for speed, by name.

Every timing is a real measurement, but eager JAX (an un-jitted ``jax.grad``: op-by-op dispatch,
an un-jitted ``lax.scan`` even more so) and eager TensorFlow are not how anyone runs them for
speed, so a claim about speed (the report's headline gaps, its timing divergences) compares
torch eager or torch.compile, jax.jit and tf.function only, names the mode beside every figure,
and leaves contended cells (harness.worker.contention) out.
"""
from __future__ import annotations

#: framework -> the modes its users run for speed (a framework not listed: compiled)
SPEED_MODES = {"torch": ("eager", "compiled"), "jax": ("compiled",), "tensorflow": ("compiled",)}
#: (framework, mode) -> how its users name it
LABELS = {("torch", "eager"): "torch eager", ("torch", "compiled"): "torch.compile",
          ("jax", "eager"): "jax eager", ("jax", "compiled"): "jax.jit",
          ("tensorflow", "eager"): "tf eager", ("tensorflow", "compiled"): "tf.function"}


def label(framework: str, mode: str) -> str:
    return LABELS.get((framework, mode), f"{framework} {mode}")


def is_speed_mode(framework: str, mode: str) -> bool:
    return mode in SPEED_MODES.get(framework, ("compiled",))


def claimable(record) -> bool:
    """May this timing record stand for its framework's speed: a speed mode, not contended."""
    return is_speed_mode(record["framework"], record.get("mode")) and not record.get("contended")


def fastest(by_mode: dict) -> dict:
    """{mode: {framework: record}} of one case and setting -> {framework: record}: each
    framework's fastest claimable record (torch: eager or torch.compile, whichever is faster)."""
    best: dict = {}
    for mode in sorted(by_mode):
        for fw, rec in by_mode[mode].items():
            if claimable(rec) and (fw not in best or float(rec["median_s"]) < float(best[fw]["median_s"])):
                best[fw] = rec
    return best


def unclaimed(records) -> list:
    """Frameworks timed only in modes that are not their speed mode (eager JAX, eager TF)."""
    timed, claimed = set(), set()
    for r in records:
        if r.get("check") == "timing" and r.get("median_s"):
            timed.add(r["framework"])
            if is_speed_mode(r["framework"], r.get("mode")):
                claimed.add(r["framework"])
    return sorted(timed - claimed)


__all__ = ["LABELS", "SPEED_MODES", "claimable", "fastest", "is_speed_mode", "label", "unclaimed"]
