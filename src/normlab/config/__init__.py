"""Typed config schemas, their registration in Hydra's ConfigStore, and validation."""
