"""Data: raw sources -> splits -> preprocessing -> resident-tensor batches."""
