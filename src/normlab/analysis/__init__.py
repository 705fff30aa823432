"""Sweep analysis: read a Hydra multirun folder, aggregate seeds, draw, write report.md.

plan (multirun.yaml) -> collect (cell folders) -> configurations (grouping, short labels) ->
tables, figures (figure_files: PNG + PDF) -> report (report.md, summary.csv); an Optuna search
goes to search (its study's trials, importances) and search_figures (Optuna's own plots);
progress prints a one-line sweep status; wandb_log logs a report to a W&B run.
"""
