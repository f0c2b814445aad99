"""Stage 7, rendering a run's records: the markdown report, the console summary, plots, and the diff of two runs."""
