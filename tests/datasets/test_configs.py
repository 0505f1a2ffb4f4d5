"""Every conf/dataset YAML targets a loader whose keywords it matches, and a
missing dataset stops with where to get it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

from claid.datasets import DatasetNotFoundError

CONF = Path(__file__).resolve().parents[2] / "conf" / "dataset"
NAMES = sorted(p.stem for p in CONF.glob("*.yaml"))
REAL = [n for n in NAMES if n != "synthetic"]


def _compose(name: str, tmp_path: Path):
    paths = {"data_dir": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache")}
    # dataset.query follows descriptor.query in the composed config
    descriptor = {"query": "crop"}
    cfg = OmegaConf.create(
        {"paths": paths, "descriptor": descriptor, "dataset": OmegaConf.load(CONF / f"{name}.yaml")}
    )
    return cfg


def test_every_issue_dataset_has_a_config():
    expected = {
        "manifest", "synthetic", "instre", "instance160", "instance335", "oxford5k",
        "paris6k", "roxford5k", "rparis6k", "holidays", "coco20k", "coco_val2017", "ilias",
    }  # fmt: skip
    assert expected <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_keys_match_the_loader_signature(name, tmp_path):
    cfg = _compose(name, tmp_path)
    target = get_method(cfg.dataset._target_)
    params = inspect.signature(target).parameters
    keys = {k for k in cfg.dataset if k != "_target_"}
    assert "root" in keys
    assert keys <= set(params), f"{name}: keys not accepted by the loader: {keys - set(params)}"
    assert str(cfg.dataset.root).startswith(str(tmp_path / "data"))


@pytest.mark.parametrize("name", REAL)
def test_missing_dataset_says_where_to_get_it(name, tmp_path):
    cfg = _compose(name, tmp_path)
    with pytest.raises(Exception) as info:
        instantiate(cfg.dataset)
    # Hydra wraps the loader's error; the cause is ours.
    error = info.value
    while error is not None and not isinstance(error, DatasetNotFoundError):
        error = error.__cause__
    assert isinstance(error, DatasetNotFoundError), repr(info.value)
    message = str(error)
    assert "does not exist" in message and "Expected layout" in message
    if name != "manifest":
        assert "http" in message or "lab" in message
