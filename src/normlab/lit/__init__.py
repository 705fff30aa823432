"""The LightningModule: loss, regularizers, optimizer and schedule around a network."""
