"""Stage 7, rendering a run's records: the markdown report, the console summary, plots, and the
diff of two runs. Pure functions of records and metadata: the same results render the same bytes.

- report: report.md (`render`) and its summary; cases, divergences, timings, run_info: its other
  sections;
- selection: which records, in which order, and `describe` (a record in one line);
- markdown: the primitives every section shares (a setting, a tolerance, a table);
- console: the summary `harness run` prints;
- plots: the PNGs the report links;
- run_diff, diff_report: `harness compare` (the changes and the exit code; their markdown).
"""
