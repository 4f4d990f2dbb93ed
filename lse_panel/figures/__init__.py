"""Matplotlib scripts that draw the project's figures (run as modules, saved as PNG)."""
