"""Run-folder utilities: seeds, threads, provenance, atomic result files, loggers."""
