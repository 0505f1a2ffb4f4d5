"""Hydra entry point.

    python run.py                                    # the paper's standard configuration
    python run.py cutter=ncut backbone=dinov2        # swap components
    python run.py -m cutter.tau2=0.1,0.2,0.3         # a sweep; compare runs in the MLflow UI
"""

import logging
import sys

import hydra
from omegaconf import DictConfig

from claid.artifacts import CorruptArtifactError, DiskFullError
from claid.datasets import DatasetFormatError, DatasetNotFoundError
from claid.models.weights import WeightsUnavailableError
from claid.pipeline import run
from claid.settings import SettingsError

log = logging.getLogger("claid")

# what a user must fix (data, weights, a queries file, a setting, a damaged cache, a full
# disk): the message names the key, file:line or path and says how; no traceback
USER_ERRORS = (WeightsUnavailableError, DatasetNotFoundError, DatasetFormatError, SettingsError,
               CorruptArtifactError, DiskFullError)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        result = run(cfg)
    except USER_ERRORS as err:
        sys.exit(f"error: {err}")
    for name, value in sorted(result.metrics.items()):
        if not name.startswith("time/"):
            log.info("%-40s %.4f", name, value)
    if "index" in result.report["settings"]:
        print(f"index dir (for python -m claid search): {result.report['settings']['index']}")
    print(f"run dir: {result.run_dir}")
    # what a Hydra sweeper optimises (lightning-hydra-template's optimized_metric)
    return result.metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    main()
