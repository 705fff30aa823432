"""Sweep analysis: read a Hydra multirun folder, aggregate seeds, draw, write report.md.

plan (multirun.yaml) -> collect (cell folders) -> configurations (grouping) -> tables,
figures -> report (report.md, summary.csv); progress prints a one-line sweep status.
"""
