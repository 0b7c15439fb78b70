"""Sweeps: the grid of cases, the results store, the runner (resume, lock), report data."""
