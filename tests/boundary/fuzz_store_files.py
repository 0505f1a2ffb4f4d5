"""Fuzzer of a region store's files (``manifest.json``, ``shard.json``, the arrays),
run in a child process by test_fuzz_in_subprocesses.py: whatever is changed,
``verify`` and opening the store answer with the one-line DamagedArtifactError (or a
ValueError naming the store), never another exception or a crash; and when verify
says ok, everything the store gives back is exactly what was written."""

import atexit
import json
import os
import shutil
import tempfile

import numpy as np
from hypothesis import event, given
from hypothesis import strategies as st

from claid.store import RegionStore
from claid.store.integrity import verify_store

from .fuzz import JSON, fuzz_settings, mutated_bytes, one_line
from .stores import make_store

_ROOT = tempfile.mkdtemp(prefix="claid-fuzz-store-")
atexit.register(shutil.rmtree, _ROOT, True)
ORIGINAL = make_store(_ROOT, images=3, shard_size=2)
SHARDS = sorted(os.listdir(os.path.join(ORIGINAL, "shards")))
FILES = ["manifest.json"] + [os.path.join("shards", s, f) for s in SHARDS
                             for f in sorted(os.listdir(os.path.join(ORIGINAL, "shards", s)))]


def snapshot(store_dir: str) -> dict:
    """Everything a reader gets from the store (the masks decoded)."""
    store = RegionStore.open(store_dir)
    masks = [store.masks([r]) for r in range(store.num_regions)]
    return {"ids": list(store.image_ids), "sizes": np.asarray(store.image_sizes()).tolist(),
            "counts": np.asarray(store.region_counts()).tolist(), "boxes": np.asarray(store.boxes()),
            "depth": np.asarray(store.depth()), "parent": np.asarray(store.parent()),
            "vectors": np.asarray(store.vectors()), "whole": np.asarray(store.whole_image_vectors()),
            "masks": masks, "cells": [store.cell(i) for i in range(store.num_images)],
            "skipped": list(store.skipped), "dim": store.dim, "dtype": str(store.dtype),
            "config": store.config}


EXPECTED = snapshot(ORIGINAL)


def same(a: dict, b: dict) -> bool:
    for key, value in a.items():
        other = b[key]
        if key == "masks":
            if len(value) != len(other) or not all(np.array_equal(x, y) for x, y in zip(value, other)):
                return False
        elif isinstance(value, np.ndarray):
            if value.shape != other.shape or value.dtype != other.dtype or not np.array_equal(value, other):
                return False
        elif value != other:
            return False
    return True


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for k, item in enumerate(value):
            yield from _paths(item, prefix + (k,))


@st.composite
def json_edit(draw, payload: bytes) -> bytes:
    """One field of a JSON file replaced by any JSON value, or deleted."""
    data = json.loads(payload)
    paths = [p for p in _paths(data) if p]
    path = draw(st.sampled_from(paths))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON)
    return json.dumps(data, indent=1, sort_keys=True).encode()


@st.composite
def same_size_edit(draw, payload: bytes) -> bytes:
    if not payload:
        return payload
    at = draw(st.integers(0, len(payload) - 1))
    byte = draw(st.integers(0, 255).filter(lambda b: b != payload[at]))
    return payload[:at] + bytes([byte]) + payload[at + 1:]


@fuzz_settings(300)
@given(name=st.sampled_from(FILES), data=st.data())
def test_a_changed_store_is_found_damaged_or_reads_back_exactly(name, data):
    work = tempfile.mkdtemp(prefix="claid-fuzz-")
    try:
        store_dir = os.path.join(work, "regions-x")
        shutil.copytree(ORIGINAL, store_dir)
        path = os.path.join(store_dir, name)
        payload = open(path, "rb").read()
        kinds = [same_size_edit(payload)]
        if name.endswith(".json"):
            kinds += [json_edit(payload), mutated_bytes(payload)]
        changed = data.draw(st.one_of(*kinds))
        with open(path, "wb") as f:
            f.write(changed)
        try:
            check = verify_store(store_dir)
        except ValueError as err:  # DamagedArtifactError, or not a store of this schema
            one_line(err)
            event(f"{os.path.basename(name)}: refused at the manifest")
            return
        for problems in check.damaged.values():
            for problem in problems:
                assert "\n" not in problem
        if not check.ok:
            event(f"{os.path.basename(name)}: damaged shard found")
            try:  # opening may succeed (values are checked by verify); reading must not crash
                snapshot(store_dir)
            except ValueError as err:
                one_line(err)
            return
        got = snapshot(store_dir)
        harmless = name == "manifest.json" and got == got  # summary, dates, versions: not read as data
        assert same(EXPECTED, got), f"verify says ok but {name} changed what the store reads back"
        event(f"{os.path.basename(name)}: unchanged content{' (manifest)' if harmless else ''}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
