"""`harness merge DIR... --out DIR`: shard runs (`run --shard K/N`) joined into one run.

Each shard folder holds its raw observations (observations.jsonl + arrays/). The merge copies
them into one folder and judges them again with verdicts.build_records over all of them at once,
so checks that need several shards' tasks (framework vs framework) are computed exactly as in an
unsharded run: the merged results.jsonl has the same records and verdicts, and report.md the
same content, as a run of all the cases on one machine (only the run id, command and times differ).

Shards must come from the same settings (seed, dtypes, devices, modes, precision, timing), the
same case selection and the same framework versions; a case found in two shards, or a shard that
is missing, is an error rather than a silently different report. ``allow_partial`` merges without
the missing shards, and the report's headline says the run is partial. The merged folder is
written whole or not at all: a failure to write it removes what the merge created.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from harness.errors import RunError
from harness.judge import known, verdicts
from harness.run.run_folder import write_run
from harness.store.records import normalise, write_jsonl
from harness.store.runs import load

#: run.json fields that must agree across shards
SAME = ("seed", "devices", "dtypes", "modes", "precisions", "timing", "frameworks")


def _source_cases(rows) -> tuple:
    """Case objects for tolerances and tags, loaded the way the workers did (name, source)."""
    from harness.case import CaseError
    from harness.define.loader import BUILTIN, cases_in

    wanted = {}
    for r in rows:
        wanted.setdefault(r.get("source") or BUILTIN, set()).add(r["case"])
    cases, notes = {}, []
    for source, names in sorted(wanted.items()):
        try:
            pool = cases_in(source)
        except CaseError as exc:
            notes.append(f"cases from {source} could not be loaded ({exc}); their default tolerances were used")
            continue
        for c in pool:
            if c.name in names:
                cases[c.name] = c
        missing = sorted(names - {c.name for c in pool})
        if missing:
            notes.append(f"{', '.join(missing)} no longer in {source}: default tolerances were used")
    return cases, notes


def _check_compatible(shards: list, allow_partial: bool = False) -> tuple:
    """(notes, partial): partial is None, or the shards and cases missing from the merge."""
    notes, partial = [], None
    first = shards[0]
    for s in shards[1:]:
        for key in SAME:
            if first.meta.get(key) != s.meta.get(key):
                raise RunError(f"cannot merge: {key} differs between {first.folder} ({first.meta.get(key)}) and "
                               f"{s.folder} ({s.meta.get(key)})")
    infos = [s.meta.get("shard") for s in shards]
    if all(infos):
        counts = {i.get("count") for i in infos}
        if len(counts) > 1:
            splits = ", ".join(f"{i.get('index')}/{i.get('count')}" for i in infos)
            raise RunError(f"cannot merge: shards of different splits ({splits})")
        indexes = [i.get("index") for i in infos]
        dupes = sorted({i for i in indexes if indexes.count(i) > 1})
        if dupes:
            raise RunError(f"cannot merge: shard {dupes[0]}/{infos[0]['count']} given twice")
        selections = {json.dumps(i.get("of_cases")) for i in infos}
        if len(selections) > 1:
            raise RunError("cannot merge: the shards split different case selections (--cases differs)")
        total = infos[0]["count"]
        missing = [f"{m}/{total}" for m in sorted(set(range(1, total + 1)) - set(indexes))]
        if missing:
            given = {c for s in shards for c in s.meta.get("cases") or []}
            absent = [c for c in infos[0].get("of_cases") or [] if c not in given]
            what = f"shard {', '.join(missing)} not given"
            if absent:
                shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
                what += f" (case(s) {shown})"
            if not allow_partial:
                raise RunError(f"cannot merge: {what}; give every shard, or --allow-partial to merge without it")
            partial = {"missing_shards": missing, "missing_cases": absent}
            notes.append(f"partial merge: {what}; those cases are absent")
    return notes, partial


def _workers(shards) -> list:
    """Each distinct worker (framework, device, precision, version, policy) once, as an unsharded run lists it."""
    out, seen = [], set()
    for s in shards:
        for w in s.meta.get("workers") or []:
            key = json.dumps({k: v for k, v in w.items() if k not in ("pid", "host")}, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                out.append(w)
    return out


def _copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write(out: Path, shards, rows, skips, owner, notes, partial, command, run_id, expected=()) -> tuple:
    """Write the merged folder: arrays and logs copied, observations, run.json, results, plots, report."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "arrays").mkdir(exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    merged_rows = []
    for s, r in rows:
        if r.get("arrays"):
            src = s.arrays_dir / r["arrays"]
            if not src.is_file():
                raise RunError(f"cannot merge: {src} is missing")
            _copy(src, out / "arrays" / r["arrays"])
        merged_rows.append(r)
    for s in shards:
        logs = s.folder / "logs"
        if logs.is_dir():
            target = out / "logs" / (s.run_id or s.folder.name)
            target.mkdir(parents=True, exist_ok=True)
            for p in logs.iterdir():
                if p.is_file():
                    _copy(p, target / p.name)
    write_jsonl(out / "observations.jsonl", merged_rows)

    cases, case_notes = _source_cases(merged_rows)
    notes += case_notes
    records = verdicts.build_records(merged_rows, cases, out / "arrays")
    seen = set()
    for r in skips:
        key = (r["case"], r["framework"], r.get("message"))
        if key not in seen:
            seen.add(key)
            records.append(r)
    records = [normalise(r, run_id) for r in records]

    first = shards[0].meta
    # the shards' own --expected tables and the merge's, judged over every shard's records at once
    files = list(dict.fromkeys([*(f for sh in shards for f in ((sh.meta.get("expected") or {}).get("files") or [])),
                                *map(str, expected)]))
    summary = known.apply(records, known.entries_for(cases.values(), files))
    meta = {"run_id": run_id, "command": command, "started": min((s.meta.get("started") or "") for s in shards),
            "seed": first.get("seed"), "cases": sorted(owner), "frameworks": first.get("frameworks"),
            "devices": first.get("devices"), "dtypes": first.get("dtypes"), "modes": first.get("modes"),
            "precisions": first.get("precisions"), "timing": first.get("timing"), "threads": first.get("threads"),
            "environment": first.get("environment"),
            "seconds": max(float(s.meta.get("seconds") or 0.0) for s in shards),
            "workers": _workers(shards),
            "merged_from": [{"run_id": s.run_id, "folder": str(s.folder), "shard": s.meta.get("shard"),
                             "seconds": s.meta.get("seconds"), "environment": s.meta.get("environment")}
                            for s in shards],
            "notes": notes, "latest": False, "expected": {"files": files, **summary}}
    if partial:
        meta["partial"] = partial     # report.render heads the report with it
    return records, write_run(out, records, meta)


def _remove(out: Path, created: list) -> None:
    """Undo a failed merge: what it wrote in ``out`` and the folders it created (deepest first)."""
    if out.is_dir():
        for p in out.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    for p in created:
        try:
            p.rmdir()
        except OSError:
            break


def merge(specs, out: Path, command: str = "", run_id: str | None = None, allow_partial: bool = False,
          expected=()) -> tuple:
    """Merge shard runs into ``out`` (created; must not hold files). Returns (out, records, meta)."""
    from harness.run.session import new_run_id

    if not specs:
        raise RunError("merge needs at least one run folder")
    shards = [load(s) for s in specs]
    for s in shards:
        if not s.has_observations():
            raise RunError(f"cannot merge {s.folder}: it has no observations.jsonl and arrays/ "
                           f"(merge needs the run folders, not just results.jsonl)")
    folders = [s.folder.resolve() for s in shards]
    if len(set(folders)) != len(folders):
        raise RunError("cannot merge: the same run folder is given twice")
    notes, partial = _check_compatible(shards, allow_partial)
    known.entries_for([], expected)   # a malformed --expected table is refused before anything is written
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise RunError(f"--out {out} exists and is not empty")

    owner: dict = {}
    rows, skips = [], []
    for s in shards:
        shard_rows = s.observations()
        for case in sorted({r["case"] for r in shard_rows} | {r["case"] for r in s.records}):
            if case in owner and owner[case] is not s:
                raise RunError(f"cannot merge: case {case!r} is in both {owner[case].folder} and {s.folder}")
            owner[case] = s
        rows += [(s, r) for r in shard_rows]
        # run-level records that have no observation: a framework without an implementation or not installed
        skips += [r for r in s.records if r.get("check") == "run" and r.get("device") == "-"]
    if any(s.meta.get("interrupted") for s in shards):
        raise RunError("cannot merge an interrupted shard: finish it with `python -m harness run --resume DIR` first")

    # one deterministic order: the cases' order in the full selection, then frameworks as configured
    of_cases = next((s.meta["shard"].get("of_cases") for s in shards if s.meta.get("shard")), None) or []
    case_rank = {name: i for i, name in enumerate(of_cases)}
    fw_rank = {fw: i for i, fw in enumerate(shards[0].meta.get("frameworks") or {})}
    rows.sort(key=lambda sr: (fw_rank.get(sr[1].get("framework"), 99), str(sr[1].get("device")),
                              str(sr[1].get("precision")), case_rank.get(sr[1]["case"], len(case_rank)), sr[1]["case"],
                              str(sr[1].get("dtype")), str(sr[1].get("mode"))))

    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        records, meta = _write(out, shards, rows, skips, owner, notes, partial, command, run_id or new_run_id(),
                               expected)
    except BaseException as exc:
        _remove(out, created)
        if isinstance(exc, OSError):
            raise RunError(f"cannot write the merged run folder {out}: {exc.strerror or exc}") from None
        raise
    return out, records, meta


__all__ = ["merge"]
