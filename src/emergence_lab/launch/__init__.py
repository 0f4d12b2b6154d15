"""Launching runs: plan a grid, hand its jobs to a Hydra launcher, keep the sweep folder's manifest, and
report what happened. Each job trains through `emergence_lab.run`."""
