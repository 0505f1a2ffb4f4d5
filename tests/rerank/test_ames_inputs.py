"""rerank=ames from explicit arguments: weights checked first, the store extracted once,
query descriptors from the query's box, the re-ranking run through apply.rerank."""

import numpy as np
import pytest
from PIL import Image

from claid.models.weights import WeightsUnavailableError
from claid.rerank.ames_inputs import ames_inputs, check_ames_weights
from claid.rerank.methods import rerank
from claid.rerank.settings import AmesSettings, parse_rerank
from claid.structures import PatchGrid, Ranking


class PixelBackbone:
    """A stand-in ViT: 14-pixel patches, each patch's mean colour through a fixed random map."""

    def __init__(self):
        self.map = np.random.default_rng(0).normal(size=(3, 32)).astype(np.float32)
        self.sizes = []

    def extract_patches(self, image):
        x = np.asarray(image, np.float32) / 255.0
        h, w = x.shape[0] // 14, x.shape[1] // 14
        self.sizes.append(image.size)
        means = x[: h * 14, : w * 14].reshape(h, 14, w, 14, 3).mean(axis=(1, 3)).reshape(h * w, 3)
        return PatchGrid(tokens=np.tanh(means @ self.map * 3), grid=(h, w), patch_size=14)


def _image(seed, size=(112, 84)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_missing_weights_stop_first_naming_both_files(tmp_path):
    with pytest.raises(WeightsUnavailableError) as err:
        check_ames_weights(AmesSettings(binarised=True, cache_dir=str(tmp_path)))
    text = str(err.value)
    assert "dinov2_ames_dist.pt" in text and "dinov2_detector.pt" in text and str(tmp_path) in text
    check_ames_weights(AmesSettings(pretrained=False))  # random weights: nothing to find


@pytest.mark.parametrize("binarised", [False, True])
def test_whole_path_with_random_weights(tmp_path, binarised):
    settings = AmesSettings(binarised=binarised, pretrained=False, database_k=20, query_k=30, num_rerank=6)
    backbone = PixelBackbone()
    images = {f"img{i}": _image(i) for i in range(8)}
    database = [(i, (lambda im=im: im)) for i, im in images.items()]
    queries = [(images["img0"], (14, 14, 84, 70)), (_image(99), None)]
    local = ames_inputs(settings, database_images=database, queries=queries, backbone=backbone,
                        cache_dir=tmp_path, source_key={"db": "test"}, dim=32)
    assert len(local.store) == 8 and local.store.encoding == ("binary" if binarised else "float16")
    assert backbone.sizes[8] == (70, 56)  # the first query described from its box's crop
    assert [q.shape for q in local.query_features] == [(20, 32), (30, 32)]  # a 5 x 4 crop has 20 positions
    again = ames_inputs(settings, database_images=database, queries=queries, backbone=backbone,
                        cache_dir=tmp_path, source_key={"db": "test"}, dim=32)
    assert len(backbone.sizes) == 8 + 2 + 2  # the store was reused: only the queries ran again
    assert again.store.directory == local.store.directory
    rankings = [Ranking(q, list(images), np.full(8, 0.5, np.float32), np.zeros((8, 4), np.float32))
                for q in ("q0", "q1")]
    own = [{"img0"}, set()]

    class Identity:
        def transform(self, x):
            return x

    got, notes = rerank(parse_rerank({"ames": {"binarised": binarised, "num_rerank": 6}}), index=Identity(),
                        rows=None, query_vectors=np.zeros((2, 4), np.float32), qids=["q0", "q1"], own=own,
                        exclusions=own, rankings=rankings, k=None, memory_gb=1.0, prepare=None, local=local)
    assert sorted(got[0].images[:6]) == [f"img{i}" for i in range(1, 7)] and got[0].images[6:] == ["img0", "img7"]
    assert got[1].images[:6] != rankings[1].images[:6]
    assert notes["ames"]["bytes_per_image"] == (20 * 16 + 80 if binarised else 20 * 64 + 80)
    assert notes["ames"]["model"] == "random(0)"
