"""The method-agnostic engine: the training loop, checkpoints and the run directory, interruption,
sharding, precision, preflight checks and the run report. It imports no method: a method hands it
a `Wired` (wired.py) and the loop's rollout-phase types (loop.py: `Phase`, `Update`)."""
