import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# Tests never reach a hub: a missing weight must fail fast, not hang on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CHROMIUM = os.environ.get("CLAID_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def chromium() -> str:
    """The system Chromium's path, for Playwright's ``executable_path`` (its own browser
    download cannot work here). Skipped without it, unless CLAID_REQUIRE_BROWSER=1
    (set by .ci/run, which installs it) makes that a failure."""
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CLAID_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    pytest.importorskip("playwright.sync_api")
    return CHROMIUM


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
