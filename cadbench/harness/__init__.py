"""The harness: the grid of cells, measuring a cell, the sweep, result persistence, progress, environment."""
