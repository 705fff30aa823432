"""normlab's Hydra configs, shipped inside the package as `normlab.conf` (pyproject.toml maps
this folder there), so Hydra finds them as `pkg://normlab.conf` from a checkout or a wheel."""
