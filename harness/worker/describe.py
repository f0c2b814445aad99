"""The reference module of a module case, built by a process of its own framework, for a worker
of another framework (harness/worker/module_problem.py):

    python -m harness.worker.describe FRAMEWORK CASE_SOURCE CASE_NAME SEED OUT.npz

Writes the reference's parameter rows (call order) and float64 values to OUT.npz; exit 1 with
the reason on stderr when the module cannot be built.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np


def main(argv=None) -> int:
    framework, source, name, seed, out = list(argv or sys.argv[1:])[:5]
    from adapters import load
    from harness.define import loader
    from harness.define.seeding import global_rngs_seeded
    from harness.worker.module_problem import reference_state

    try:
        adapter = load(framework)
        adapter.setup("cpu", 1, "default")
        case = loader.find(name, source)
        with global_rngs_seeded(int(seed), name):
            state = reference_state(adapter, case, int(seed))
    except Exception as exc:  # noqa: BLE001 - the reason goes to the worker that asked
        print(f"{type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    meta = {"params": state["params"], "kind": state["kind"], "layers": state["layers"],
            "order": list(state["values"])}
    tmp = f"{out}.tmp.{os.getpid()}"
    with open(tmp, "wb") as fh:
        np.savez(fh, __meta__=np.array(json.dumps(meta)), **{f"v/{n}": v for n, v in state["values"].items()})
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["main"]
