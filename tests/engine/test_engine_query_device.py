"""Queries go through the networks on the extraction's device and precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from claid.engine import described_like_extraction, extract_regions
from claid.engine.query_device import autocast_dtype, extraction_device
from claid.images import load_image


def test_precision_and_device_names():
    assert autocast_dtype("bf16-mixed") is torch.bfloat16
    assert autocast_dtype("16-mixed") is torch.float16
    assert autocast_dtype("32-true") is None
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype("bf16-true")
    assert extraction_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            extraction_device("gpu")


def test_the_block_runs_under_the_extractions_autocast_and_restores_nothing_else():
    layer = torch.nn.Linear(4, 3)
    x = torch.ones(2, 4)
    with described_like_extraction([layer, None], accelerator="cpu", precision="bf16-mixed"):
        assert layer(x).dtype == torch.bfloat16
    assert layer(x).dtype == torch.float32 and layer.weight.dtype == torch.float32
    with described_like_extraction([layer], accelerator="cpu", precision="32-true") as device:
        assert device == torch.device("cpu") and layer(x).dtype == torch.float32


def test_a_query_matches_its_database_vector_at_the_databases_precision(
        image_folder, components, tmp_path):
    """A bf16-mixed extraction: the whole-image query vector described inside the
    block equals the stored whole-image vector; outside (fp32) it does not."""
    backbone, cutter, descriptor = components
    root, _ = image_folder
    path = str(root / "astronaut.jpg")
    store = extract_regions([("a", path)], backbone=backbone, cutter=cutter,
                            descriptor=descriptor, store_dir=str(tmp_path), config={"p": "bf16"},
                            precision="bf16-mixed", dtype="float32", progress=False)
    stored = store.regions_of("a").whole_vector
    image = load_image(path)
    whole = np.array([[0, 0, image.width, image.height]], dtype=np.float32)
    with described_like_extraction([descriptor, backbone], accelerator="cpu",
                                   precision="bf16-mixed"):
        same = descriptor.describe(image, whole)[0]
    fp32 = descriptor.describe(image, whole)[0]
    np.testing.assert_allclose(same, stored, atol=1e-6)
    assert np.abs(fp32 - stored).max() > 1e-4
