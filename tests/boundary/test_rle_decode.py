"""The numpy decode of compressed COCO RLE strings gives exactly the run lengths of the
Python decode (the ``rleFrString`` rule) on any string of the code, and pycocotools'
own on real masks."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from claid.detections.coco_masks import (
    SegmentationError,
    _rle_counts_exact,
    decode_segmentation,
    rle_counts,
)

from .fuzz import fuzz_settings

CODE = [chr(48 + k) for k in range(64)]


@fuzz_settings(500)
@given(text=st.text(alphabet=st.sampled_from(CODE), max_size=60))
def test_the_numpy_decode_is_the_python_decode(text):
    try:
        fast = rle_counts(text)
    except SegmentationError as err:
        assert "ends inside" in str(err)
        return
    assert [int(v) for v in fast] == _rle_counts_exact(text.encode())


@pytest.mark.parametrize("seed", range(5))
def test_real_masks_decode_as_pycocotools_decodes_them(seed):
    mask = np.random.default_rng(seed).random((37, 53)) > 0.7
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert np.array_equal(decode_segmentation(rle, 37, 53), mask)
    assert int(rle_counts(rle["counts"]).sum()) == 37 * 53


def test_a_string_of_huge_runs_is_decoded_exactly_and_refused():
    text = ("o" * 11 + "?") * 40  # runs near 2^60: their sums leave int64 (the exact path)
    runs = rle_counts(text)
    assert [int(v) for v in runs] == _rle_counts_exact(text.encode())
    with pytest.raises(SegmentationError):
        decode_segmentation({"size": [4, 4], "counts": text}, 4, 4)
