"""Pure analysis on arrays: projection, selection, decoding through a callable, metrics, comparison (no Panel)."""
