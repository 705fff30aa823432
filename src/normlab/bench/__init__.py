"""`python -m normlab.bench`: normlab's training loop against a hand-written PyTorch loop.

Modules: cases (the benchmarked cases and the one that runs the real pipeline), raw (the
reference loop), template (the common Lightning template), floor (a bare LightningModule),
timer (loop time and memory), worker (one case in a fresh process), sweep (the main ablation,
serial vs parallel), summary (medians, ratios, tables), __main__ (the command line).
"""
