"""Stage 2, planning: cases x frameworks x devices x dtypes x modes x precisions -> tasks, grouped per worker, sharded."""
