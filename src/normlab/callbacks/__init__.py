"""Lightning callbacks: checkpointing, early stopping, and the instruments."""
