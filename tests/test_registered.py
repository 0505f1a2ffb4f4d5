"""An index dir names its descriptor by registered name + plain settings: what it
records builds the same descriptor, and a hostile record runs nothing."""

import json
import pathlib

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from claid.config.registered import (
    RecordedDescriptorError,
    build_recorded_descriptor,
    descriptor_class,
    record_descriptor,
)

CONF = pathlib.Path(__file__).resolve().parents[1] / "conf"


def _group(path: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / path), resolve=False)


def test_a_cnn_config_round_trips_through_its_record():
    config = {**_group("descriptor/resnet50.yaml"), "model_name": "resnet18", "pretrained": False,
              "layer": "layer4", "dim": 512}
    record = record_descriptor(config)
    assert record["name"] == "cnn" and "_target_" not in record["settings"]
    json.dumps(record)  # plain data
    descriptor = build_recorded_descriptor(record)
    assert type(descriptor).__name__ == "CNNRegionDescriptor" and descriptor.dim == 512


def test_a_vit_tokens_record_builds_its_backbone_from_the_registered_class():
    backbone = {**_group("backbone/dino_vits8.yaml"), "pretrained": False}
    config = {"_target_": "claid.descriptors.vit_tokens.ViTTokenDescriptor", "_recursive_": False,
              "backbone": backbone, "pretrained": False, "checkpoint": None, "dim": 384}
    record = record_descriptor(config)
    assert record["settings"]["backbone"]["name"] == "timm_vit"
    descriptor = build_recorded_descriptor(record)
    assert descriptor.backbone.embed_dim == 384
    vector = descriptor.describe_query(Image.new("RGB", (40, 32), (200, 30, 30)), None)
    assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-3)


def test_an_unregistered_class_is_recorded_by_target_and_refused_when_built():
    record = record_descriptor({"_target_": "mypackage.MyDescriptor", "dim": 8})
    assert record["name"] is None and record["target"] == "mypackage.MyDescriptor"
    with pytest.raises(RecordedDescriptorError, match="pass the descriptor object"):
        build_recorded_descriptor(record)


def _payload(target):
    """What an edited search.json would use to make hydra run code."""
    return {"_target_": "pathlib.Path.write_text", "self": str(target), "data": "pwned"}


@pytest.mark.parametrize("make_record, message", [
    (lambda t: _payload(t), "expected"),  # the old _target_ form, now refused
    (lambda t: {"name": "pathlib.Path.write_text", "settings": {}}, "not one of claid's registered"),
    (lambda t: {"name": "cnn", "settings": {"_target_": "pathlib.Path.write_text"}}, "not a setting"),
    (lambda t: {"name": "cnn", "settings": {"model_name": _payload(t)}}, "only plain values"),
    (lambda t: {"name": "cnn", "settings": {"mean": [_payload(t)]}}, "only plain values"),
    (lambda t: {"name": "vit_tokens", "settings": {"pretrained": False, "dim": 384,
                "backbone": _payload(t)}}, "expected"),
    (lambda t: {"name": "vit_tokens", "settings": {"pretrained": False, "dim": 384, "backbone": {
        "name": "timm_vit", "settings": {"model_name": _payload(t)}}}}, "only plain values"),
    (lambda t: {"name": "vit_tokens", "settings": {"pretrained": False, "dim": 384, "backbone": {
        "name": "builtins.eval", "settings": {}}}}, "not one of claid's registered"),
])
def test_a_hostile_record_is_refused_and_its_payload_never_runs(tmp_path, make_record, message):
    target = tmp_path / "payload-ran"
    with pytest.raises(RecordedDescriptorError, match=message):
        build_recorded_descriptor(make_record(target))
    assert not target.exists()


def test_a_hostile_search_json_stops_claid_search_without_running_its_payload(tmp_path, monkeypatch):
    import sys

    import claid
    from claid.__main__ import main
    from claid.artifacts import schema_version
    from claid.index import build_index
    from claid.index.search_table import RegionTable, save_search_table

    target = tmp_path / "payload-ran"
    index_dir = tmp_path / "index"
    vectors = np.eye(4, 8, dtype=np.float32)
    build_index(vectors, factory="Flat").save(index_dir, provenance={}, overwrite=True)
    table = RegionTable(store=None, extra_vectors=vectors, region_image=np.arange(4),
                        boxes=np.zeros((4, 4), np.float32), image_ids=list("abcd"), dim=8)
    save_search_table(index_dir, table, descriptor={}, key={})
    meta = json.loads((index_dir / "search.json").read_text())
    assert meta["schema_version"] == schema_version("search_table")
    meta["descriptor"] = _payload(target)  # the edit the issue describes
    (index_dir / "search.json").write_text(json.dumps(meta))
    query = Image.new("RGB", (32, 32))
    with pytest.raises(RecordedDescriptorError, match="search.json: descriptor"):
        claid.search([query], index_dir=index_dir)
    with pytest.raises(RecordedDescriptorError):
        claid.search_text(["a cat"], index_dir=index_dir)
    query.save(tmp_path / "q.png")
    monkeypatch.setattr(sys, "argv", ["claid", "search", "--index-dir", str(index_dir),
                                      str(tmp_path / "q.png")])
    with pytest.raises(SystemExit) as info:
        main()
    assert str(info.value.code).startswith("error: ") and "search.json" in str(info.value.code)
    assert not target.exists()
    assert descriptor_class({"name": "cnn", "settings": {}}).__name__ == "CNNRegionDescriptor"


@pytest.mark.parametrize("payload", [
    {"_target_": "torch.load", "f": "x.pt", "weights_only": False},
    {"_target_": "numpy.load", "file": "x.npy", "allow_pickle": True},
])
def test_loader_targets_from_the_issue_are_refused(payload):
    with pytest.raises(RecordedDescriptorError):
        build_recorded_descriptor(payload)
    with pytest.raises(RecordedDescriptorError, match="only plain values"):
        build_recorded_descriptor({"name": "cnn", "settings": {"checkpoint": payload}})


def test_a_pickled_payload_named_as_checkpoint_is_loaded_as_weights_only(tmp_path):
    import torch

    target = tmp_path / "payload-ran"
    checkpoint = tmp_path / "weights.pth"
    torch.save({"conv1.weight": _WritesAFile(target)}, checkpoint)
    record = {"name": "cnn", "settings": {"model_name": "resnet18", "pretrained": False,
                                           "checkpoint": str(checkpoint), "layer": "layer4", "dim": 512}}
    with pytest.raises(Exception, match="(?i)weights.only|unpickl|could not be read"):
        build_recorded_descriptor(record)
    assert not target.exists()


class _WritesAFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.write_text, (pathlib.Path(self.target), "pwned"))
