"""Hydra entry point.

    python run.py                                    # the paper's standard configuration
    python run.py cutter=ncut backbone=dinov2        # swap components
    python run.py -m cutter.tau2=0.1,0.2,0.3         # a sweep; compare runs in the MLflow UI

Under DDP every rank runs this script; only global rank 0 goes past the extraction
(claid/engine/ranks.py). The ranks Lightning starts by re-running this command line
run the one job their parent runs, not the parent's whole sweep.
"""

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from claid.artifacts import DamagedArtifactError, DiskFullError
from claid.config.checks import check_settings
from claid.config.preflight import prepare_run
from claid.config.rules import SettingsError
from claid.config.run_settings import tracking_setup
from claid.datasets import DatasetFormatError, DatasetNotFoundError
from claid.engine.extraction_stage import IncompleteStoreError
from claid.engine.ranks import hydra_job_args, rank_argv, remember_job
from claid.models.weights import WeightsUnavailableError
from claid.pipeline import run
from claid.tracking.sweep_parent import job_failed

log = logging.getLogger("claid")

# what a user must fix (data, weights, a queries file, a setting, a damaged cache, a full
# disk, an incomplete store): the message names the key, file:line or path and says how
USER_ERRORS = (WeightsUnavailableError, DatasetNotFoundError, DatasetFormatError, SettingsError,
               DamagedArtifactError, DiskFullError, IncompleteStoreError)


def where_everything_went(result) -> list[str]:
    """The run's last lines: its run dir, region store, index dir, MLflow run (and the
    command that opens the UI on it) and the command that serves it in the browser."""
    settings = result.report["settings"]
    lines = ["", f"run dir:       {result.run_dir}", f"region store:  {settings['store']}"]
    if "index" in settings:
        lines.append(f"index dir:     {settings['index']}")
    if result.tracking.get("run_id"):
        uri, run_id = result.tracking["uri"], result.tracking["run_id"]
        lines.append(f"MLflow run:    {run_id}  (experiment {result.tracking['experiment_id']})")
        lines.append(f"  open it:     mlflow ui --backend-store-uri {uri}  ->  http://127.0.0.1:5000/#/experiments/"
                     f"{result.tracking['experiment_id']}/runs/{run_id}")
    else:
        lines.append("MLflow:        tracking is off (tracking=none)")
    if "index" in settings:
        lines.append(f"search it:     claid serve --run-dir {result.run_dir}")
    return lines


def quiet_libraries(verbose: bool) -> None:
    """Keep the libraries' chatter (FAISS's loader, Lightning's tips and device lines,
    MLflow's database set-up, deprecation warnings inside them) out of a plain run;
    ``verbose=true`` (or Hydra's ``hydra.verbose=true``) leaves them on."""
    if verbose:
        return
    import warnings

    for name in ("faiss.loader", "faiss", "lightning", "lightning.pytorch", "pytorch_lightning",
                 "lightning_fabric", "mlflow", "alembic", "urllib3", "numba"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for module in ("pytorch_lightning", "lightning", "torch", "timm", "mlflow", "setuptools", "pkg_resources"):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
    warnings.filterwarnings("ignore", message=r".*(LeafSpec|pkg_resources|setuptools|license).*")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    quiet_libraries(bool(cfg.get("verbose", False)))
    # what the DDP ranks Lightning relaunches from this process must run: this job only
    remember_job(hydra_job_args(sys.argv[1:]))
    try:
        check_settings(cfg)  # a misspelled or out-of-range key: one line, before anything else
        prepare_run(cfg)  # threads, every missing weight file at once: before any MLflow run
        result = run(cfg)
    except Exception as err:
        if job_failed(tracking_setup(cfg), err, traceback=not isinstance(err, USER_ERRORS)):  # a multirun's job: recorded
            return None  # on its MLflow run; the other jobs go on and the sweep summary lists it
        if isinstance(err, USER_ERRORS):
            sys.exit(f"error: {err}")
        raise
    if result is None:  # a rank other than 0: it extracted its share, rank 0 reports
        return None
    for name, value in sorted(result.metrics.items()):
        if not name.startswith("time/"):
            log.info("%-40s %.4f", name, value)
    print("\n".join(where_everything_went(result)))
    # what a Hydra sweeper optimises (lightning-hydra-template's optimized_metric)
    return result.metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    sys.argv = rank_argv(sys.argv)
    main()
