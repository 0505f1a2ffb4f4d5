"""Thin Lightning glue for the batched model work (patches, regions, descriptors).

    datamodule  image lists -> decoded, preprocessed, shape-grouped batches
    module      predict_step: backbone -> cutter -> descriptor
    writer      persist every batch into the region store; progress in images/s
    extract     ``extract_regions``: the resumable extraction stage
    token_cache ``CachedTokens``: PatchGrids read from an earlier store, not a forward
    stage       the run's extraction stage: ``extract_stage`` (store key, reuse, tokens)
"""

from claid.engine.datamodule import ImageListDataModule, ImageListDataset, collate_images
from claid.engine.extract import extract_regions, format_summary
from claid.engine.module import ExtractionModule, describe_regions
from claid.engine.token_cache import CachedTokens
from claid.engine.writer import ExtractionProgress, StoreWriter

__all__ = [
    "CachedTokens",
    "ExtractionModule",
    "ExtractionProgress",
    "ImageListDataModule",
    "ImageListDataset",
    "StoreWriter",
    "collate_images",
    "describe_regions",
    "extract_regions",
    "format_summary",
]
