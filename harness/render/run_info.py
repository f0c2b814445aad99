"""What the report says about the run itself, from run.json: the banners of an interrupted run
and of a partial merge (under the title, so no reader takes its verdicts for a whole run), and
the "Run and environment" section (settings, machine, workers and their precision policies).
"""
from __future__ import annotations

from harness.render import markdown as md


def interrupted_banner(info: dict) -> str:
    """The warning under the title of an interrupted run's report; ``info``: run.json's "interrupted"
    (signal, finished, tasks, run_dir)."""
    return (f"**⚠ Interrupted ({info['signal']})**: {info['finished']} of {info['tasks']} task(s) finished "
            f"before the run was stopped; the others are listed as not run. Finish it with "
            f"`python -m harness run --resume {info.get('run_dir', 'RUN_DIR')}`.")


def partial_banner(info: dict) -> str:
    """The warning under the title of a merge made without some shards; ``info``: run.json's "partial"."""
    cases = info.get("missing_cases") or []
    absent = f" — {len(cases)} case(s) absent: {', '.join(cases)}" if cases else ""
    return (f"**⚠ Partial run**: merged without shard {', '.join(info.get('missing_shards') or [])} "
            f"(`--allow-partial`){absent}. Its verdicts cover only the shards given.")


def run_section(meta) -> list:
    """The "Run and environment" section: how the run was made, on what machine, by which workers."""
    lines = ["## Run and environment", "", md.table(_settings_rows(meta), ["run", ""]), ""]
    env = meta.get("environment") or {}
    if env:
        lines += [md.table([[str(k), str(v)] for k, v in env.items()], ["machine", ""]), ""]
    return lines + _workers_lines(meta.get("workers") or [])


def _settings_rows(meta) -> list:
    rows = [["command", f"`{meta['command']}`" if meta.get("command") else "(not recorded)"],
            ["run id", meta.get("run_id", "")], ["started", meta.get("started", "") or "(not recorded)"],
            ["seed", meta.get("seed", "")], ["cases", len(meta.get("cases", []))],
            ["frameworks", ", ".join(f"{fw} {v or ''}".strip() for fw, v in (meta.get("frameworks") or {}).items())],
            ["devices", ", ".join(meta.get("devices") or [])], ["dtypes", ", ".join(meta.get("dtypes") or [])],
            ["modes", ", ".join(meta.get("modes") or [])], ["precision", ", ".join(meta.get("precisions") or [])],
            ["timing", meta.get("timing") or "off"],
            ["threads per worker", meta.get("threads") or "framework default"]]
    if meta.get("seconds") is not None:
        rows.append(["wall time", f"{float(meta['seconds']):.1f} s"])
    if meta.get("shard"):
        rows.append(["shard", f"{meta['shard'].get('index')}/{meta['shard'].get('count')} "
                              f"({len(meta.get('cases', []))} of {len(meta['shard'].get('of_cases') or [])} cases)"])
    if meta.get("merged_from"):
        rows.append(["merged from", ", ".join(m.get("run_id", "?") for m in meta["merged_from"])])
    if meta.get("executor") and meta["executor"] != "local":
        rows.append(["executor", meta["executor"]])
    if meta.get("derived"):
        rows.append(["note", "run.json was not available: settings derived from the results"])
    for note in meta.get("notes") or []:
        rows.append(["note", md.cell(note)])
    return [[str(a), str(b)] for a, b in rows]


def _workers_lines(workers) -> list:
    if not workers:
        return []
    rows = [[w.get("framework", ""), w.get("device", ""), w.get("precision", ""), str(w.get("version", "")),
             str(w.get("device_name", "")),
             ", ".join(f"{k}={v}" for k, v in (w.get("policy") or {}).items())] for w in workers]
    rows = sorted(rows)   # the order workers started in is a race; the report must not be
    table = md.table(rows, ["framework", "device", "precision", "version", "device name", "policy"])
    if len(rows) > md.FOLD_ROWS:
        return md.fold("workers and precision policies", [table], len(rows))
    return ["Workers and their precision policies:", "", table, ""]


__all__ = ["interrupted_banner", "partial_banner", "run_section"]
