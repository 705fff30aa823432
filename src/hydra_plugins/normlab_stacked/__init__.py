"""normlab's stacked launcher (`hydra/launcher=stacked`): normlab.stack, as a Hydra Launcher."""
