"""claid/interfaces.py: every built-in component meets the protocol of its kind, checked
on the classes the shipped configs name (nothing built), and on small built ones."""

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from claid.interfaces import (
    Backbone,
    Cutter,
    RegionDescriptor,
    RegionSource,
    Reranker,
    check_ranking,
    missing_members,
)
from claid.structures import Ranking

CONF = Path(__file__).resolve().parents[1] / "conf"


def _targets(group: str) -> dict[str, str]:
    return {p.stem: OmegaConf.load(p)["_target_"] for p in sorted((CONF / group).glob("*.yaml"))
            if "_target_" in OmegaConf.load(p)}


@pytest.mark.parametrize("group, protocol", [("backbone", Backbone), ("descriptor", RegionDescriptor)])
def test_every_shipped_backbone_and_descriptor_class_meets_its_protocol(group, protocol):
    from hydra.utils import get_class

    targets = _targets(group)
    assert targets
    for option, target in targets.items():
        assert not missing_members(get_class(target), protocol), f"{group}={option}: {target}"


def test_every_shipped_cutter_is_a_cutter_or_a_region_source(compose_cfg):
    from claid.config.run_settings import region_source
    from claid.engine.cut_source import CutRegions

    for option in _targets("cutter"):
        source = region_source(compose_cfg(f"cutter={option}"))
        assert isinstance(source, RegionSource), option
        if isinstance(source, CutRegions):
            cutter = source.networks.get("cutter")
            assert isinstance(cutter, Cutter) and not missing_members(cutter, Cutter), option


def test_a_class_lacking_a_member_is_named():
    class NoConfig:
        def __call__(self, patch_grid):
            return None

    assert missing_members(NoConfig, Cutter) == ["config"]
    assert missing_members(NoConfig(), Cutter) == ["config"]


def test_built_components_keep_their_promised_shapes(compose_cfg):
    """A small random-weight backbone, the k-sums cutter and a ResNet descriptor: what
    the protocols' docstrings promise (shapes, dtypes, unit rows)."""
    from PIL import Image
    from skimage import data

    from claid.config.run_settings import region_source

    source = region_source(compose_cfg("backbone=dino_vits16", "backbone.pretrained=false",
                                       "descriptor.pretrained=false"))
    backbone, cutter, descriptor = (source.networks.get(n) for n in ("backbone", "cutter", "descriptor"))
    image = Image.fromarray(data.astronaut()).resize((128, 96))
    grid = backbone.extract_patches(image)
    assert grid.tokens.dtype == np.float32 and grid.tokens.shape == (grid.grid[0] * grid.grid[1], backbone.embed_dim)
    tree = cutter(grid)
    assert tree.masks.dtype == bool and tree.masks.shape[1:] == grid.grid
    assert tree.boxes.dtype == np.int64 and np.all(tree.depth >= 1)
    boxes = grid.patch_boxes_to_pixels(tree.boxes).astype(np.float32) if len(tree) else np.array(
        [[0, 0, 128, 96]], np.float32)
    vectors = descriptor.describe(image, boxes)
    assert vectors.shape == (len(boxes), descriptor.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    query = descriptor.describe_query(image, [10, 10, 90, 80])
    assert query.shape == (descriptor.dim,) and abs(np.linalg.norm(query) - 1) < 1e-4


def test_check_ranking_refuses_what_a_reranker_must_not_return():
    good = Ranking("q", ["a", "b"], np.array([0.9, 0.5], np.float32), np.zeros((2, 4), np.float32))
    check_ranking(good)
    with pytest.raises(ValueError, match="best first"):
        check_ranking(Ranking("q", ["a", "b"], np.array([0.5, 0.9], np.float32), np.zeros((2, 4), np.float32)))
    with pytest.raises(ValueError, match="boxes"):
        check_ranking(Ranking("q", ["a"], np.array([0.5], np.float32), np.zeros((2, 4), np.float32)))


def test_every_built_in_reranker_meets_the_reranker_protocol():
    from claid.rerank.methods import STEPS
    from claid.rerank.settings import ORDER, SETTINGS

    assert list(STEPS) == list(ORDER)  # one step per method, in the running order
    for name, step in STEPS.items():
        assert isinstance(step, Reranker) and not missing_members(step, Reranker), name
        assert step.name == name and step.settings_type is SETTINGS[name]


def test_a_reranker_step_returns_well_formed_rankings():
    """alpha-QE and SuperGlobal on a small exact index: every ranking they return is
    well formed (claid.interfaces.check_ranking), and the notes say what ran."""
    from claid.index import build_index, search_images
    from claid.rerank.apply import RerankState
    from claid.rerank.common import RowSource
    from claid.rerank.methods import STEPS
    from claid.rerank.settings import SETTINGS

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_index(vectors)
    region_image = np.arange(60) // 3
    image_ids = [f"i{n}" for n in range(20)]
    boxes = np.zeros((60, 4), np.float32)
    queries = vectors[[0, 10, 20]] + 0.05 * rng.normal(size=(3, 16)).astype(np.float32)
    rankings = search_images(index, queries, region_image, boxes, image_ids, ["a", "b", "c"], k=None,
                             exclude=[set()] * 3)
    rows = RowSource(index, region_image, boxes, image_ids, whitened=index.transform(vectors))
    for name in ("aqe", "superglobal"):
        state = RerankState(index=index, rows=rows, qw=index.transform(queries), qids=["a", "b", "c"],
                            own=[set()] * 3, exclusions=[set()] * 3, rankings=rankings, k=None, memory_gb=0.1)
        out = STEPS[name](state, SETTINGS[name]())
        assert name in out.notes and len(out.rankings) == 3
        for ranking in out.rankings:
            check_ranking(ranking)
