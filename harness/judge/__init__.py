"""Stage 5, judging: observations -> records (verdicts, tolerances, causes, coverage, known divergences, speed claims)."""
