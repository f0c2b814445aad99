"""gradharness: do PyTorch, JAX and TensorFlow compute the same gradients, and how fast?

The public API is ``Case`` (harness.case); everything else is reached through
``python -m harness``. This package never imports a framework.
"""
from .case import Case, CaseError, ModuleCase

__all__ = ["Case", "CaseError", "ModuleCase"]
__version__ = "0.1.0"
