"""Framework adapters and their registry.

This module imports no framework: it knows each adapter's module and the framework's import
name, so the parent process can tell what is installed (importlib.util.find_spec) and which
version (importlib.metadata) without paying for an import. Only `load()` imports a framework,
and only worker processes call it.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class FrameworkInfo:
    name: str          # the harness's name for it: torch, jax, tensorflow
    module: str        # the framework's import name
    distributions: tuple  # pip distributions that may provide it, first found wins
    adapter: str       # adapters.<module>:<class>
    install: str       # what to tell a user who lacks it

    def installed(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False

    def version(self) -> str | None:
        for dist in self.distributions:
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None


FRAMEWORKS: dict[str, FrameworkInfo] = {
    info.name: info
    for info in (
        FrameworkInfo("torch", "torch", ("torch",), "adapters.torch_adapter:TorchAdapter",
                      "pip install 'gradharness[torch]'  (CPU build: see README)"),
        FrameworkInfo("jax", "jax", ("jax",), "adapters.jax_adapter:JaxAdapter",
                      "pip install 'gradharness[jax]'  (jax[cpu]; jax[cuda12] for GPUs)"),
        FrameworkInfo("tensorflow", "tensorflow",
                      ("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-macos"),
                      "adapters.tensorflow_adapter:TensorflowAdapter",
                      "pip install 'gradharness[tensorflow]'  (tensorflow-cpu)"),
    )
}


def load(name: str):
    """Import the framework and return a fresh adapter instance (worker processes only)."""
    module_name, class_name = FRAMEWORKS[name].adapter.split(":")
    return getattr(importlib.import_module(module_name), class_name)()
