import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# Tests never reach a hub: a missing weight must fail fast, not hang on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def compose_cfg(tmp_path):
    """Compose conf/config.yaml with overrides, all outputs under tmp_path."""
    from hydra import compose, initialize_config_dir

    def _compose(*overrides: str):
        base = [
            f"paths.root_dir={tmp_path}",
            f"paths.output_dir={tmp_path}/run",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"tracking.artifact_location={tmp_path}/mlartifacts",
        ]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="config", overrides=base + list(overrides))

    return _compose
