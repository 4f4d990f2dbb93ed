"""Cohort bundles: schema, on-disk I/O, validation and data adaptors."""
