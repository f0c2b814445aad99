"""Stage 4, inside a worker process: one task -> one observation (gradients every way asked, finite differences, timing)."""
