"""The results file: one JSON object a line, schema-versioned; and the run's metadata.

results.jsonl is the harness's API (README: "results.jsonl schema"). Every record carries
``schema`` and ``run_id``; readers must ignore fields they do not know. Files are written to a
temporary name and renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path


SCHEMA = 1

#: fields every record has (others depend on the check)
FIELDS = ("schema", "run_id", "case", "framework", "framework_version", "device", "device_name",
          "dtype", "mode", "precision", "check", "param", "verdict", "cause", "max_abs_err",
          "max_rel_err", "worst_index", "got", "expected", "atol", "rtol", "message")



def _clean(value):
    """JSON has no inf/nan: write them as strings a reader can parse back with float()."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def normalise(record: dict, run_id: str) -> dict:
    out = {"schema": SCHEMA, "run_id": run_id}
    for key in FIELDS[2:]:
        out[key] = record.get(key)
    for key, value in record.items():
        out.setdefault(key, value)
    return _clean(out)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a hidden temporary file beside ``path``, flush it to disk, then rename it over
    ``path``: a reader (or a run killed half-way, or a full disk) never leaves half a file. On
    failure the temporary file is removed and the error raised."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}.{threading.get_ident()}")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def write_jsonl(path: Path, rows) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows))


def read_observations(path: Path, strict: bool = False) -> list:
    """observations.jsonl of a run that may have been killed: one row per task id, where a task
    appears twice the later answer wins (and takes the later place). A last line that is not JSON
    is a torn write (the process died mid-write) and is dropped; any other line that is not JSON is
    skipped, or with ``strict`` raises ValueError ("PATH:LINE: not a JSON line"). No file: []."""
    rows: dict = {}
    bad = None   # the number of a line that is not JSON: harmless only as the last line
    try:
        fh = open(path)
    except FileNotFoundError:
        return []
    with fh:
        for number, line in enumerate(fh, 1):
            if bad is not None and strict:
                raise ValueError(f"{path}:{bad}: not a JSON line")
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if line.strip():   # blank lines are skipped
                    bad = number
                continue
            if isinstance(row, dict) and row.get("id"):
                rows.pop(row["id"], None)
                rows[row["id"]] = row
    return list(rows.values())


def read_jsonl(path: Path) -> list:
    rows = []
    with open(path) as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
    return rows


def as_float(value):
    """Inverse of _clean for numbers."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


__all__ = ["FIELDS", "SCHEMA", "as_float", "atomic_write_text", "normalise", "read_jsonl",
           "read_observations", "write_jsonl"]
