"""The tour: the tutorial's ideas as live, checked steps (steps: the data; runner: running them)."""
