"""Launchers: where the cells of a sweep run (never how they are measured)."""
