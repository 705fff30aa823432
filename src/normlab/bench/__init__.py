"""`python -m normlab.bench`: normlab's training loop against a hand-written PyTorch loop.

Modules: cases (what each benchmarked case runs), template (the common Lightning template it is
compared with), timer (loop timing and memory), worker (one case in a fresh process), sweep
(a 12-cell sweep, serial vs parallel), summary (medians, ratios, table, JSON), __main__ (CLI).
"""
