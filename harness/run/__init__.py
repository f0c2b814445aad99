"""Stage 3, running: one `harness run` (session), its executors (local worker processes, Ray), progress, in-process runs, and the re-judging of shards (merge)."""
