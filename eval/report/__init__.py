"""Reports derived from the tidy results table: paper-shaped tables, plots, multi-run aggregation."""
