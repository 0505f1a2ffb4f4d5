"""The region store: every region of every image, with its descriptor, on disk.

Written by the extraction stage (:func:`claid.engine.extract_regions`), read by
indexing, search and evaluation. Sharded (appendable, resumable, one writer per DDP
rank), memory-mappable and versioned.

    format.py       the on-disk layout (schema version, shard files, commit protocol)
    reader.py       RegionStore.open(store_dir): image ids, vectors, boxes, masks, tokens
    writer.py       RegionStoreWriter (atomic shard commits), ensure_store, write_summary
    maintenance.py  compact_store, find_token_store
    synthetic.py    write_synthetic_store: generated stores for benchmarks and memory tests
"""

from claid.artifacts import config_hash
from claid.store.format import FORMAT_NAME, REGION_DTYPE, SCHEMA_VERSION
from claid.store.maintenance import compact_store, find_token_store
from claid.store.reader import RegionStore
from claid.store.writer import RegionStoreWriter, ensure_store, write_summary

__all__ = [
    "SCHEMA_VERSION",
    "FORMAT_NAME",
    "REGION_DTYPE",
    "RegionStore",
    "RegionStoreWriter",
    "compact_store",
    "config_hash",
    "ensure_store",
    "find_token_store",
    "write_summary",
]
