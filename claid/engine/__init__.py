"""Thin Lightning glue for the batched model work (patches, regions, descriptors).

    datamodule  image lists -> decoded, preprocessed, shape-grouped batches
    module      predict_step: backbone -> cutter -> descriptor
    writer      persist every batch into the region store; progress in images/s
    extract     ``extract_regions``: the resumable extraction stage
    feature_cache ``FeatureCache``: per-image backbone tokens / descriptor maps, so a
                re-cut runs no network
    cut_pool    the cutter's worker pool and the bounded queue spanning batches
    query_device ``described_like_extraction``: queries on the extraction's device
                and precision
    stage       the run's extraction stage: ``extract_stage`` (store key, reuse, caches)
"""

from claid.engine.datamodule import ImageListDataModule, ImageListDataset, collate_images
from claid.engine.extract import extract_regions, format_summary
from claid.engine.feature_cache import FeatureCache
from claid.engine.module import ExtractionModule, describe_regions
from claid.engine.prediction_writer import ExtractionProgress, StoreWriter
from claid.engine.query_device import described_like_extraction

__all__ = [
    "ExtractionModule",
    "ExtractionProgress",
    "FeatureCache",
    "ImageListDataModule",
    "ImageListDataset",
    "StoreWriter",
    "collate_images",
    "describe_regions",
    "described_like_extraction",
    "extract_regions",
    "format_summary",
]
