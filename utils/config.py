"""The project's Hydra config composed from Python (for scripts with their own argument parser,
benchmarks and tests); Hydra scripts get the same object through @hydra.main."""
from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def compose_config(overrides=None):
    """configs/config.yaml with `key=value` overrides (`hydra.*` ones, which only a Hydra run uses, are dropped,
    except hydra.searchpath: more config folders, e.g. with a model set of one's own under models/)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="config",
                       overrides=[o for o in (overrides or []) if not str(o).startswith("hydra.")
                                  or str(o).startswith("hydra.searchpath=")])
