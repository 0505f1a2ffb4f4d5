"""Everything ``rerank=ames`` reads, built from explicit arguments: the weights checked
before any extraction, the database images' local-descriptor store (extracted where
missing), the AMES model and each query's local descriptors.

A run calls :func:`check_ames_weights` before its extraction and :func:`ames_inputs`
before re-ranking, and passes the result to :func:`claid.rerank.methods.rerank` as ``local``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from claid.models.weights import WeightsUnavailableError
from claid.rerank.apply import LocalInputs
from claid.rerank.local_features.weight_file import missing_message, weight_source


def check_ames_weights(settings) -> None:
    """Stop before any work when a weight file ``settings`` asks for is missing.

    Raises:
        WeightsUnavailableError: one line naming every missing file, where it was looked
            for and how to provide it.
    """
    model = "ames_binarised" if settings.binarised else "ames"
    problems = []
    for name, checkpoint, option in ((model, settings.checkpoint, "checkpoint"),
                                     ("detector", settings.detector_checkpoint, "detector_checkpoint")):
        path = weight_source(name, checkpoint=checkpoint, pretrained=settings.pretrained,
                             cache_dir=settings.cache_dir)
        if path is not None and not path.is_file():
            problems.append(missing_message(name, path, option))
    if problems:
        raise WeightsUnavailableError(" | ".join(problems))


def ames_inputs(settings, *, database_images: Iterable, queries: Sequence, backbone, cache_dir: str | Path,
                source_key: dict, dim: int = 768) -> LocalInputs:
    """The model, the store and the query descriptors for ``rerank=ames``.

    Args:
        settings: :class:`~claid.rerank.settings.AmesSettings`.
        database_images: (image_id, PIL image or a function returning it) of every database
            image (stored ones are not read again).
        queries: per query, (PIL image, box (x1, y1, x2, y2) in pixels or None), in the
            order of the rankings; a box crops the query (a query that is a database
            image is described from its box's region).
        backbone: DINOv2 ViT-B/14 with registers (``extract_patches(image) -> PatchGrid``).
        cache_dir: where the store folder ``local-<hash>`` lives (beside the region store).
        source_key: identifies the database images and the backbone (the store's key).
        dim: the backbone's token dimension.
    """
    from claid.rerank.ames_model import build_ames
    from claid.rerank.local_features.detector import build_detector
    from claid.rerank.local_features.extract_local import local_features_stage, query_local_features

    check_ames_weights(settings)
    model, model_source = build_ames(binarised=settings.binarised, pretrained=settings.pretrained,
                                     checkpoint=settings.checkpoint, seed=settings.seed,
                                     cache_dir=settings.cache_dir, local_dim=dim)
    detector, detector_source = build_detector(dim=dim, pretrained=settings.pretrained,
                                               checkpoint=settings.detector_checkpoint, seed=settings.seed,
                                               cache_dir=settings.cache_dir)
    projection = model.remap_local[0].W.detach().cpu().numpy() if settings.binarised else None
    store = local_features_stage(settings, database_images, backbone, cache_dir, source_key=source_key,
                                 detector=detector, detector_source=detector_source, projection=projection,
                                 projection_source=model_source)
    query_features = [query_local_features(settings, image, box, backbone, detector) for image, box in queries]
    return LocalInputs(model, store, query_features, {"model": model_source, "detector": detector_source})
