"""Pure computation: mergeable window summaries in, findings out. No I/O, no clocks."""
