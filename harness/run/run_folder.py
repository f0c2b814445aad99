"""A run folder written one way, by `run`, `merge` and `report`: run.json and results.jsonl, then
the plots, then report.md, each file whole (written atomically) and in that order, so a folder
whose report.md is there is complete. A write that fails raises OSError: each caller knows what
it keeps (a run its observations, for --resume) and what it removes."""
from __future__ import annotations

import json
from pathlib import Path

from harness.render import plots as plotting
from harness.render import report
from harness.store.records import atomic_write_text, write_jsonl


def write_run(folder: Path, records: list, meta: dict, *, results: bool = True, plots: bool = True,
              report_file: Path | None = None) -> dict:
    """Write ``records`` and ``meta`` into ``folder``: run.json and results.jsonl (``results``),
    the plots (``plots``) and the report (``report_file``, default ``folder/report.md``; the plots
    go beside it). Returns ``meta`` with the plots written (``meta["plots"]``)."""
    if results:
        atomic_write_text(folder / "run.json", json.dumps(meta, indent=2, default=str))
        write_jsonl(folder / "results.jsonl", records)
    target = Path(report_file) if report_file is not None else folder / "report.md"
    meta["plots"] = plotting.render_all(records, target.parent) if plots else []
    atomic_write_text(target, report.render(records, meta))
    return meta


__all__ = ["write_run"]
