"""A timing record's account of its machine: the judge copies what a worker measured about
contention (harness/worker/contention.py) into the record, so a report and `compare` can leave
contended cells out without reading observations."""
from __future__ import annotations


def record_fields(m: dict, timing: dict | None = None) -> dict:
    """What a timing record carries about its machine, from a measurement's as_dict() (an
    observation's timing phase) and its timing observation: rows from before contention was
    measured read as not contended."""
    out = {"contended": bool(m.get("contended")), "contention": list(m.get("contention") or []),
           "load": m.get("load"), "cpu_per_wall": m.get("cpu_per_wall"), "cpu_wait": m.get("cpu_wait"),
           "cpu_others": m.get("cpu_others"), "cpu_stolen": m.get("cpu_stolen"),
           "attempts": m.get("attempts", 1),
           "calibration_share": {k: c["share"] for k, c in (m.get("calibration") or {}).items()
                                 if c and c.get("share") is not None},
           "timing_case": bool((timing or {}).get("timing_case"))}
    if out["contended"]:
        out["message"] = "contended: " + "; ".join(out["contention"])
    return out


__all__ = ["record_fields"]
