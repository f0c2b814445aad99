"""The frameworks' compilation caches, kept between runs in one folder the user can clear.

Most of a run's time on a cold machine is compiling: eager JAX compiles every primitive for every
shape with XLA (about 40 ms each on a CPU, a thousand in a hundred cases), `jax.jit`,
`torch.compile` and `tf.function(jit_compile=True)` compile whole programs. Each framework can keep
what it compiled on disk and load it on the next run instead; the harness points each worker at a
folder of its framework's own under one cache folder (``--cache-dir``, default ``default_dir()``;
``--no-cache`` for none). A cached executable is the one the compiler made, so no gradient, verdict
or steady-state timing changes; only the first-call (compile) times do, which then measure loading.
Delete the folder to start cold (`rm -rf ~/.cache/gradharness`).

- JAX: its persistent compilation cache (``JAX_COMPILATION_CACHE_DIR``), with no minimum compile
  time or entry size, so eager primitives are cached too;
- torch: Inductor's and Triton's caches (``TORCHINDUCTOR_CACHE_DIR``, ``TRITON_CACHE_DIR``);
- TensorFlow: none. Its XLA cache (``--tf_xla_persistent_cache_directory``) works, but on loading
  an entry TensorFlow 2.21's CPU build logs an error that the host's machine features differ from
  the compiler's (a comparison of differently spelled feature lists: the same machine) and warns of
  SIGILL; a tool whose logs cry wolf is worse than a compile, so TensorFlow compiles every run.
"""
from __future__ import annotations

import os
from pathlib import Path

#: environment variable naming the default cache folder
ENV = "GRADHARNESS_CACHE_DIR"


def default_dir() -> Path:
    """``$GRADHARNESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/gradharness``, else ``~/.cache/gradharness``."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gradharness"


def worker_env(framework: str, cache_dir) -> dict:
    """The variables that point ``framework``'s worker at its cache under ``cache_dir`` (None: {})."""
    if not cache_dir:
        return {}
    root = Path(cache_dir).absolute()
    if framework == "jax":
        return {"JAX_COMPILATION_CACHE_DIR": str(root / "jax"),
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    if framework == "torch":
        return {"TORCHINDUCTOR_CACHE_DIR": str(root / "torchinductor"), "TRITON_CACHE_DIR": str(root / "triton")}
    return {}


__all__ = ["ENV", "default_dir", "worker_env"]
