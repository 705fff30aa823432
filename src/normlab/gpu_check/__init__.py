"""`python -m normlab.gpu_check` (`make gpu-check`, scripts/gpu_check.sh): normlab's GPU paths
on this machine's GPU, each check a number measured against a reference, in one process under
one deadline. See docs/reliability.md, "The GPU check"."""
