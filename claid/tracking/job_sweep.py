"""What a job of a Hydra multirun knows about its sweep: whether it runs inside one,
and the sweep's MLflow parent run (written by :class:`claid.tracking.sweep_parent.SweepParent`
into ``<sweep dir>/mlflow_sweep.json``), which its own run is nested under."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

PARENT_FILE = "mlflow_sweep.json"


@dataclass
class JobSweep:
    """What a job of a multirun knows about its sweep."""

    parent_run_id: str
    swept: list[str]


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def job_sweep() -> JobSweep | None:
    """The sweep of the current job (parent run id, swept keys), or None outside a
    multirun or when the multirun has no parent run (tracking off)."""
    if not in_multirun():
        return None
    from hydra.core.hydra_config import HydraConfig

    path = Path(HydraConfig.get().sweep.dir) / PARENT_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return JobSweep(parent_run_id=saved["parent_run_id"], swept=list(saved["swept"]))
