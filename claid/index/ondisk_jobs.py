"""The on-disk index of a region store built by separate jobs (nodes, cluster tasks),
on one shared work dir:

    python -m claid.index.ondisk_jobs train STORE WORK --parts 4 [--set factory=...]
    python -m claid.index.ondisk_jobs part  STORE WORK 2          (one job per part)
    python -m claid.index.ondisk_jobs merge STORE WORK INDEX_DIR

``train`` trains once on a seeded sample (``conf/index/ivfpq_ondisk.yaml`` unless
``--preset`` names another file; ``--set key=value`` overrides one of its keys);
each ``part`` encodes its share of the store's regions (a part already built and
matching its checksum is kept, a damaged one rebuilt); ``merge`` merges the parts on
disk into an index dir that ``claid search`` and ``claid serve`` open. The plan
records the store's content hash: a part job on another store is refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from claid.index.ondisk_build import build_part, merge_parts, read_plan, train_parts

PRESET = Path(__file__).resolve().parents[2] / "conf" / "index" / "ivfpq_ondisk.yaml"
#: preset keys that are not training settings
NOT_TRAINING = ("_target_", "_partial_", "k", "parts", "work_dir", "keep_parts", "add_block")


def _table(store_dir: str):
    from claid.index.search_table import region_table
    from claid.store import RegionStore
    from claid.store.integrity import store_content_hash

    store = RegionStore.open(store_dir)
    return store, region_table(store, None), {"store_content": store_content_hash(store)}


def training_settings(preset: str | Path, overrides: list[str]) -> dict:
    """The preset's training keys with ``key=value`` overrides (values read as YAML)."""
    settings = yaml.safe_load(Path(preset).read_text(encoding="utf-8"))
    if not isinstance(settings, dict):
        raise ValueError(f"{preset}: not an index preset (a YAML mapping)")
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ValueError(f"--set {override!r}: expected key=value")
        settings[key] = yaml.safe_load(value)
    return {k: v for k, v in settings.items() if k not in NOT_TRAINING}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m claid.index.ondisk_jobs",
                                     description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    train = verbs.add_parser("train", help="train once and write the plan")
    part = verbs.add_parser("part", help="encode one part")
    merge = verbs.add_parser("merge", help="merge the parts into an index dir")
    for sub in (train, part, merge):
        sub.add_argument("store", help="the region store")
        sub.add_argument("work", help="the shared work dir")
    train.add_argument("--parts", type=int, default=4)
    train.add_argument("--preset", default=str(PRESET))
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    train.add_argument("--seed", type=int, default=0)
    part.add_argument("part", type=int)
    merge.add_argument("index_dir")
    args = parser.parse_args(argv)
    try:
        store, table, source = _table(args.store)
        if args.verb == "train":
            settings = {"seed": args.seed, **training_settings(args.preset, args.set)}
            plan = train_parts(table, args.work, args.parts, source=source, **settings)
            print(f"trained: {plan['n_rows']} rows in {plan['parts']} parts ({args.work})")
            return
        if read_plan(args.work).get("source") != source:
            raise ValueError(f"{args.work} was planned for another region store than {args.store}")
        if args.verb == "part":
            record = build_part(table, args.work, args.part)
            print(f"part {args.part}: rows {record['rows']} "
                  f"{'kept' if record.get('reused') else 'built'}")
            return
        _merge(store, table, args.work, args.index_dir, source)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _merge(store, table, work: str, index_dir: str, source: dict) -> None:
    from claid.index.search_table import save_search_table

    index = merge_parts(work)
    index.save(index_dir, provenance={"ondisk_jobs": source})
    descriptor = (store.config or {}).get("descriptor") or {}
    save_search_table(Path(index_dir), table, descriptor=descriptor, key={"ondisk_jobs": source})
    print(f"merged: {index.ntotal} regions -> {index_dir}")


if __name__ == "__main__":
    main()
