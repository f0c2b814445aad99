"""Stage 6, storing: the results file (records, observations, metadata) and finished runs read back."""
