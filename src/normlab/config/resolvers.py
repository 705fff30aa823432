"""OmegaConf resolvers used by conf/train.yaml."""

from __future__ import annotations

import os
import secrets

from omegaconf import OmegaConf

from normlab.paths import data_cache_dir
from normlab.sweep import cell_folder_name, cell_name_excludes


def register_resolvers() -> None:
    """`${uid:}`: a short random id, cached so every read in one process (and Hydra's copied
    sweep cache) agrees; it keeps run folders started in the same second apart.
    `${cwd:}`: the working directory, the default home of outputs/ (Hydra's convention).
    `${data_cache:}`: the default data folder (normlab.paths.data_cache_dir).
    `${one_minus:x}`: 1 - x, e.g. a momentum searched as its log-uniform gap to 1.
    `${cell_name_excludes:${hydra.overrides.task}}`: the keys a cell's folder name leaves out
    (normlab.sweep.RESULT_NEUTRAL_KEYS, plus the sweep's own name).
    `${cell_folder:${hydra.job.override_dirname},${hydra.overrides.task},<sweeper params>}`: a
    cell's folder name, within the file-name limit whatever the command line
    (normlab.sweep.cell_folder_name)."""
    OmegaConf.register_new_resolver(
        "uid", lambda: secrets.token_hex(3), use_cache=True, replace=True
    )
    OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)
    OmegaConf.register_new_resolver("data_cache", lambda: str(data_cache_dir()), replace=True)
    OmegaConf.register_new_resolver("one_minus", lambda x: 1.0 - float(x), replace=True)
    OmegaConf.register_new_resolver(
        "cell_folder",
        lambda dirname, overrides, params: cell_folder_name(
            str(dirname), list(overrides), [str(key) for key in (params or {})]
        ),
        replace=True,
    )
    OmegaConf.register_new_resolver(
        "cell_name_excludes", lambda overrides: cell_name_excludes(list(overrides)), replace=True
    )
