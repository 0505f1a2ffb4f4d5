import numpy as np
import pytest

from claid.index import build_index, rank_images, rank_images_dense, search_images

from .conftest import clustered_vectors

IMAGES = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
# Regions 0-1 in a, 2-4 in b, 5 in c; d has no regions.
REGION_IMAGE = np.array([0, 0, 1, 1, 1, 2], dtype=np.int64)
REGION_BOXES = np.arange(24, dtype=np.float32).reshape(6, 4)


def loop_reference(sims, ids, region_image, image_ids, exclude):
    """The definition, one entry at a time: first appearance with similarity > 0."""
    out = []
    for q in range(sims.shape[0]):
        seen, images, scores, regions = set(), [], [], []
        for s, r in zip(sims[q], ids[q]):
            if r < 0 or s <= 0:
                continue
            image = image_ids[region_image[r]]
            if image in seen or (exclude and image in exclude[q]):
                continue
            seen.add(image)
            images.append(image)
            scores.append(s)
            regions.append(r)
        out.append((images, scores, regions))
    return out


def test_hand_computed_ranking():
    sims = np.array([[0.9, 0.8, 0.5, 0.2, 0.0, -0.3]], dtype=np.float32)
    ids = np.array([[3, 2, 0, 5, 1, 4]])
    (ranking,) = rank_images(sims, ids, REGION_IMAGE, REGION_BOXES, IMAGES, ["q0"])
    assert ranking.qid == "q0"
    assert ranking.images == ["b.jpg", "a.jpg", "c.jpg"]  # d never appears; 0 and < 0 dropped
    np.testing.assert_allclose(ranking.scores, [0.9, 0.5, 0.2])
    np.testing.assert_array_equal(ranking.boxes, REGION_BOXES[[3, 0, 5]])


def test_exclusion_padding_and_empty_rows():
    sims = np.array([[0.9, 0.8, 0.7, -np.inf], [-0.1, -0.2, -np.inf, -np.inf]], np.float32)
    ids = np.array([[3, 0, 5, -1], [1, 2, -1, -1]])
    first, second = rank_images(
        sims,
        ids,
        REGION_IMAGE,
        REGION_BOXES,
        IMAGES,
        ["q0", "q1"],
        exclude=[{"b.jpg", "not-in-db.jpg"}, set()],
    )
    assert first.images == ["a.jpg", "c.jpg"]
    np.testing.assert_array_equal(first.boxes, REGION_BOXES[[0, 5]])
    assert second.images == [] and second.scores.shape == (0,) and second.boxes.shape == (0, 4)


def test_matches_the_definition_on_random_rankings():
    rng = np.random.default_rng(0)
    n_regions, n_images, n_queries, k = 400, 60, 37, 50
    region_image = rng.integers(n_images, size=n_regions)
    boxes = rng.random((n_regions, 4)).astype(np.float32)
    image_ids = [f"img{i}" for i in range(n_images)]
    sims = -np.sort(-rng.normal(0.1, 0.3, size=(n_queries, k)).astype(np.float32), axis=1)
    ids = np.stack([rng.permutation(n_regions)[:k] for _ in range(n_queries)])
    ids[5, 40:] = -1
    exclude = [{f"img{rng.integers(n_images)}"} for _ in range(n_queries)]
    qids = [f"q{i}" for i in range(n_queries)]
    # Small blocks so that the block loop is exercised too.
    rankings = rank_images(sims, ids, region_image, boxes, image_ids, qids, exclude, block=300)
    for ranking, (images, scores, regions) in zip(
        rankings, loop_reference(sims, ids, region_image, image_ids, exclude)
    ):
        assert ranking.images == images
        np.testing.assert_array_equal(ranking.scores, np.array(scores, np.float32))
        np.testing.assert_array_equal(ranking.boxes, boxes[regions].reshape(-1, 4))


def test_bad_inputs_are_errors():
    sims = np.array([[0.5, 0.9]], np.float32)
    ids = np.array([[0, 1]])
    with pytest.raises(ValueError, match="descending"):
        rank_images(sims, ids, REGION_IMAGE, REGION_BOXES, IMAGES, ["q"])
    with pytest.raises(ValueError, match="NaN"):
        rank_images(np.array([[np.nan, 0.1]]), ids, REGION_IMAGE, REGION_BOXES, IMAGES, ["q"])
    with pytest.raises(ValueError, match="store has 6"):
        rank_images(sims[:, ::-1], np.array([[0, 9]]), REGION_IMAGE, REGION_BOXES, IMAGES, ["q"])
    with pytest.raises(ValueError, match="image ids"):
        rank_images(sims[:, ::-1], ids, REGION_IMAGE, REGION_BOXES, IMAGES[:2], ["q"])
    with pytest.raises(ValueError, match="qids"):
        rank_images(sims[:, ::-1], ids, REGION_IMAGE, REGION_BOXES, IMAGES, ["q", "r"])


def test_dense_ranking_equals_sparse_ranking_of_everything():
    rng = np.random.default_rng(1)
    region_image = rng.integers(30, size=200)
    boxes = rng.random((200, 4)).astype(np.float32)
    image_ids = [f"i{i}" for i in range(35)]  # 5 images without regions (usually)
    sims = rng.normal(0, 0.3, size=(9, 200)).astype(np.float32)
    qids = [f"q{i}" for i in range(9)]
    exclude = [{"i3"}] * 9
    ids = np.argsort(-sims, axis=1, kind="stable")
    sparse = rank_images(
        np.take_along_axis(sims, ids, axis=1), ids, region_image, boxes, image_ids, qids, exclude
    )
    dense = rank_images_dense(sims, region_image, boxes, image_ids, qids, exclude)
    for a, b in zip(sparse, dense):
        assert a.images == b.images and "i3" not in b.images
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert np.all(b.scores > 0)


def test_search_images_end_to_end():
    # 40 images with 6 regions each; each query is a noisy copy of one region, so its
    # image must come first with that region's box.
    vectors = clustered_vectors(240, 32, n_clusters=240, seed=5)
    region_image = np.repeat(np.arange(40), 6)
    boxes = np.random.default_rng(2).random((240, 4)).astype(np.float32)
    image_ids = [f"img{i:02d}.jpg" for i in range(40)]
    targets = np.array([7, 100, 239])
    noise = np.random.default_rng(3).normal(0, 0.01, (3, 32)).astype(np.float32)
    queries = vectors[targets] + noise
    qids = ["q7", "q100", "q239"]
    index = build_index(vectors)
    for k in (10, None):
        rankings = search_images(
            index, queries, region_image, boxes, image_ids, qids, k=k, query_block=2
        )
        for ranking, target in zip(rankings, targets):
            assert ranking.images[0] == image_ids[region_image[target]]
            np.testing.assert_array_equal(ranking.boxes[0], boxes[target])
            assert len(set(ranking.images)) == len(ranking.images)
            assert np.all(np.diff(ranking.scores) <= 0) and np.all(ranking.scores > 0)
    # The query image itself can be excluded.
    excluded = search_images(
        index,
        queries[:1],
        region_image,
        boxes,
        image_ids,
        qids[:1],
        k=None,
        exclude=[{image_ids[region_image[7]]}],
    )
    assert image_ids[region_image[7]] not in excluded[0].images


def test_search_images_on_empty_store_and_bad_queries():
    index = build_index(np.zeros((0, 8), np.float32))
    queries = clustered_vectors(2, 8)
    for k in (5, None):
        rankings = search_images(
            index, queries, np.zeros(0, np.int64), np.zeros((0, 4)), [], ["a", "b"], k=k
        )
        assert [r.images for r in rankings] == [[], []]
    queries[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        search_images(index, queries, np.zeros(0, np.int64), np.zeros((0, 4)), [], ["a", "b"])
