"""Panel components: per-session state and the Viewer panes of the explorer."""
