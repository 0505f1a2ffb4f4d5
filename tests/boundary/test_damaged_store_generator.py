"""The damaged-store generator: every field of every file of a small store changed,
one at a time, in a plausible way (a box moved by a pixel, a vector entry changed, a
mask byte replaced by another valid RLE byte, an id or a size in shard.json edited),
the arrays and masks.rle keeping their size. Each damage must be found three times:

* ``claid verify`` reports it (exit 1; a damaged manifest is its one-line error);
* a run's reuse check (:func:`drop_damaged_shards`) moves the shard to damaged/
  (a damaged manifest stops the run with one line);
* ``export-coco`` stops with one line.

Fields of manifest.json that are records about the store, not data it serves
(``claid_version``, ``created_utc``, ``summary``), are not damage: a run never reads
them as data. ``python -m pytest tests/boundary/test_damaged_store_generator.py -s``
prints the count of damages found / made."""

import json
import os
import shutil
import warnings

import numpy as np

from claid.detections.export import export_coco
from claid.store.integrity import drop_damaged_shards
from claid.verify import verify_path

from .stores import make_store

NOT_DATA = {("claid_version",), ("created_utc",), ("summary",)}
RLE = [chr(48 + k) for k in range(64)]


def _leaves(value, prefix=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, prefix + (key,))
    elif isinstance(value, list) and value:
        for k, item in enumerate(value):
            yield from _leaves(item, prefix + (k,))
    else:
        yield prefix, value


def _other(value):
    """A plausible other value of the same kind (and, for numbers and text, length)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        text = str(value)
        return int(text[:-1] + str((int(text[-1]) + 1) % 10))
    if isinstance(value, float):
        return value + 1.0
    if isinstance(value, str):
        return value[:-1] + ("b" if value[-1:] != "b" else "c") if value else "x"
    return [] if value is None else None


def _json_damages(relative, data):
    for path, value in _leaves(data):
        if path in NOT_DATA or path[:1] in NOT_DATA:
            continue
        def apply(store_dir, path=path, value=value):
            full = os.path.join(store_dir, relative)
            edited = json.loads(open(full).read())
            node = edited
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = _other(value)
            open(full, "w").write(json.dumps(edited, indent=1, sort_keys=True))
        yield f"{relative}:{'.'.join(map(str, path))}", apply


def _npy_damages(relative, array):
    for row in range(array.shape[0]):
        fields = array.dtype.names or (None,)
        for name in fields:
            width = array[name].shape[1:] if name else array.shape[1:]
            for col in range(int(np.prod(width))) if width else [None]:
                def apply(store_dir, row=row, name=name, col=col):
                    full = os.path.join(store_dir, relative)
                    edited = np.load(full)
                    target = edited[name] if name else edited
                    flat = target[row].reshape(-1) if col is not None else None
                    if col is None:
                        target[row] = target[row] + 1
                    else:
                        flat[col] = flat[col] + 1 if target.dtype.kind == "f" else flat[col] + 1
                        target[row] = flat.reshape(target[row].shape)
                    np.save(full, edited)
                yield f"{relative}[{row}].{name or 'value'}{'' if col is None else f'[{col}]'}", apply
            if name is None:
                break  # one damage per row of a plain array (every entry is the same kind)


def _rle_damages(relative, regions):
    for row, (offset, length) in enumerate(zip(regions["mask_offset"], regions["mask_length"])):
        def apply(store_dir, at=int(offset) + int(length) // 2):
            full = os.path.join(store_dir, relative)
            data = bytearray(open(full, "rb").read())
            data[at] = ord(RLE[(data[at] - 48 + 1) % 64])
            open(full, "wb").write(bytes(data))
        yield f"{relative}@mask{row}", apply


def damages(store_dir):
    yield from _json_damages("manifest.json", json.loads(open(os.path.join(store_dir, "manifest.json")).read()))
    for shard in sorted(os.listdir(os.path.join(store_dir, "shards"))):
        folder = os.path.join("shards", shard)
        yield from _json_damages(os.path.join(folder, "shard.json"),
                                 json.loads(open(os.path.join(store_dir, folder, "shard.json")).read()))
        regions = np.load(os.path.join(store_dir, folder, "regions.npy"))
        yield from _npy_damages(os.path.join(folder, "regions.npy"), regions)
        for name in ("vectors.npy", "whole.npy"):
            yield from _npy_damages(os.path.join(folder, name), np.load(os.path.join(store_dir, folder, name)))
        yield from _rle_damages(os.path.join(folder, "masks.rle"), regions)


def _found_by_reuse(store_dir) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(drop_damaged_shards(store_dir))
    except ValueError as err:  # a damaged manifest: the run's one line
        return "\n" not in str(err)


def _found_by_verify(store_dir) -> bool:
    try:
        ok, _ = verify_path(store_dir)
        return not ok
    except ValueError as err:  # python -m claid verify: "error: ..." and exit 1
        return "\n" not in str(err)


def _found_by_export(store_dir, out) -> bool:
    try:
        export_coco(store_dir, str(out))
    except ValueError as err:  # python -m claid export-coco: "error: ..." and exit 1
        return "\n" not in str(err) and not out.exists()
    return False


def test_every_same_size_damage_is_found_by_verify_the_reuse_check_and_export(tmp_path):
    original = make_store(tmp_path / "original", images=4, shard_size=2)
    assert verify_path(original)[0]
    made, missed, sizes_kept = 0, [], 0
    for what, apply in damages(original):
        store_dir = str(tmp_path / "work" / "regions-x")
        shutil.rmtree(tmp_path / "work", ignore_errors=True)
        shutil.copytree(original, store_dir)
        before = {f: os.path.getsize(os.path.join(store_dir, f)) for f in (what.split("[")[0].split("@")[0].split(":")[0],)}
        apply(store_dir)
        sizes_kept += all(os.path.getsize(os.path.join(store_dir, f)) == s for f, s in before.items())
        made += 1
        found = (_found_by_verify(store_dir), _found_by_export(store_dir, tmp_path / "out.json"),
                 _found_by_reuse(store_dir))
        if not all(found):
            missed.append(f"{what}: verify/export/reuse found {found}")
    print(f"\ndamaged-store generator: {made - len(missed)} of {made} damages found by verify, export "
          f"and the reuse check ({sizes_kept} of them kept their file's size)")
    assert made > 300 and not missed, missed[:10]
