"""Devices this machine has, found without importing a framework (nvidia-smi for CUDA GPUs).

Each framework's worker then says which of them it can actually use (a CPU-only build of a
framework turns its GPU tasks into `skipped` records with the reason).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from functools import lru_cache


@lru_cache(maxsize=None)
def cuda_devices() -> tuple:
    """('cuda:0', name), ... from `nvidia-smi -L`; empty without NVIDIA GPUs or the tool."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ()
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    found = []
    for line in out.splitlines():
        m = re.match(r"GPU (\d+): (.*?)(?: \(UUID.*)?$", line.strip())
        if m:
            found.append((f"cuda:{m.group(1)}", m.group(2)))
    return tuple(found)


def available() -> list:
    return ["cpu"] + [d for d, _ in cuda_devices()]


def resolve(spec: str) -> list:
    """--devices: comma-separated 'cpu', 'cuda', 'cuda:N', 'all'. Raises ValueError naming an
    unknown or absent device."""
    have = available()
    chosen = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        if token == "all":
            picks = have
        elif token == "cuda" or token == "gpu":
            picks = [d for d in have if d.startswith("cuda:")]
            if not picks:
                raise ValueError("no CUDA device on this machine (nvidia-smi found none)")
        elif token == "cpu" or re.fullmatch(r"cuda:\d+", token):
            if token not in have:
                raise ValueError(f"device {token!r} is not on this machine (available: {', '.join(have)})")
            picks = [token]
        else:
            raise ValueError(f"unknown device {token!r} (use cpu, cuda, cuda:N or all; "
                             f"available: {', '.join(have)})")
        chosen += [d for d in picks if d not in chosen]
    if not chosen:
        raise ValueError("no device selected")
    return chosen


__all__ = ["available", "cuda_devices", "resolve"]
