"""A feature cache's per-image files are strangers' files too: one cut short or
overwritten is computed again (with a warning), one with arrays that do not fit is
one line naming the file, never a traceback from zipfile."""

import numpy as np
import pytest

from claid.artifacts import DamagedArtifactError
from claid.engine.feature_cache import FeatureCache
from claid.structures import PatchGrid


@pytest.fixture
def cache(tmp_path):
    cache = FeatureCache(tmp_path / "tokens-x", kind="tokens", key={"k": 1})
    for name in ("a.jpg", "b.jpg"):
        cache.put_patch_grid(name, PatchGrid(tokens=np.ones((6, 4), np.float32), grid=(2, 3), patch_size=8,
                                             scale=(1.0, 1.0), image_size=(16, 24)))
    return cache


def test_an_item_cut_short_is_computed_again_with_a_warning(cache):
    path = cache._path("a.jpg")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="damaged, or not the output of 'a.jpg'; computed again"):
        assert cache.missing(["a.jpg", "b.jpg"]) == ["a.jpg"]
    assert cache.has("b.jpg")


def test_another_images_item_is_not_taken(cache):
    cache._path("b.jpg").write_bytes(cache._path("a.jpg").read_bytes())
    with pytest.warns(UserWarning, match="computed again"):
        assert not cache.has("b.jpg")


def test_an_item_whose_arrays_do_not_fit_is_one_line(cache):
    np.savez(cache._path("a.jpg"), image_id=np.array("a.jpg"), tokens=np.full((5, 4), np.nan, np.float32),
             grid=np.array([2, 3]), patch_size=np.array(8), scale=np.array([1.0, 1.0]),
             image_size=np.array([16, 24]))
    with pytest.raises(DamagedArtifactError) as err:
        cache.patch_grid("a.jpg")
    assert "non-finite" in str(err.value) and "\n" not in str(err.value)


def test_a_zip_with_a_bad_checksum_is_one_line(cache):
    path = cache._path("a.jpg")
    data = bytearray(path.read_bytes())
    at = data.index(b"tokens.npy") + 200  # inside the tokens member's bytes
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedArtifactError, match="unreadable"):
        cache.patch_grid("a.jpg")
