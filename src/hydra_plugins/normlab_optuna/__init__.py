"""normlab's Hydra sweeper on Optuna: ask a batch of trials, launch them, tell their results."""
