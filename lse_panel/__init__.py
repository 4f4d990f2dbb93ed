"""lse-panel."""
