"""CNNRegionDescriptor(network=False): pools cached maps like the full descriptor,
builds no network, refuses to run on pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from claid.descriptors.cnn import CNNRegionDescriptor

SETTINGS = dict(model_name="resnet18", pretrained=False, layer="layer3", dim=256,
                pooling="gem", gem_p=3.0, mask_pooling=True)


def test_pool_only_descriptor_gives_the_vectors_of_the_full_one():
    full = CNNRegionDescriptor(**SETTINGS)
    pool_only = CNNRegionDescriptor(**SETTINGS, network=False, **full.pooling_geometry())
    assert full.has_network and not pool_only.has_network
    assert pool_only.extractor is None and not list(pool_only.parameters())
    torch.manual_seed(0)
    with torch.no_grad():
        fmap = full(torch.rand(1, 3, 96, 128))[0]
    boxes = np.array([[0, 0, 64, 48], [10, 20, 128, 96], [0, 0, 128, 96]], np.float32)
    masks = np.zeros((3, 6, 8), bool)
    masks[0, :3, :4] = masks[1, 1:, 1:] = masks[2] = True
    cached = torch.from_numpy(fmap.numpy().copy())  # what the feature cache gives back
    np.testing.assert_array_equal(
        full.pool(fmap, boxes, (1.0, 1.0), masks, mask_cell_px=(16.0, 16.0)),
        pool_only.pool(cached, boxes, (1.0, 1.0), masks, mask_cell_px=(16.0, 16.0)))


def test_pool_only_descriptor_needs_its_stride_and_runs_no_forward():
    with pytest.raises(ValueError, match="network=False needs the layer's stride"):
        CNNRegionDescriptor(**SETTINGS, network=False)
    with pytest.raises(ValueError, match="stride=8, but layer 'layer3'"):
        CNNRegionDescriptor(**SETTINGS, stride=8)
    pool_only = CNNRegionDescriptor(**SETTINGS, network=False, stride=16)
    with pytest.raises(ValueError, match="network=False"):
        pool_only(torch.zeros(1, 3, 32, 32))
