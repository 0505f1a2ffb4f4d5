"""``python -m claid verify DIR``: check a region store or an index dir for damage.

    python -m claid verify outputs/cache/regions-ab12cd34ef56        # a region store
    python -m claid verify outputs/cache/index-0f1e2d3c4b5a          # an index dir
    python -m claid verify --sizes-only outputs/cache/regions-...    # quick: sizes only

A store is checked shard by shard (shard.json, array headers, every file's size and
sha256 against the records the writer kept); an index dir file by file against
search.json. Prints one line per damaged part and a verdict; exits 1 when anything
is damaged (a run would rebuild it: damaged shards are re-extracted, a damaged index
is rebuilt), 0 when all is well.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def verify_path(path: str | Path, *, checksums: bool = True) -> tuple[bool, list[str]]:
    """Check the store or index dir at ``path``.

    Returns:
        (ok, report lines).
    Raises:
        ValueError: ``path`` is neither a region store nor an index dir.
    """
    from claid.index.index_dir_check import index_dir_problems
    from claid.store.integrity import verify_store

    path = Path(path)
    how = "sizes and sha256 checksums" if checksums else "sizes (no checksums)"
    if (path / "manifest.json").is_file():
        check = verify_store(str(path), checksums=checksums)
        lines = [f"DAMAGED shard {name}: {problem}"
                 for name, problems in check.damaged.items() for problem in problems]
        if check.unrecorded:
            lines.append(f"note: {len(check.unrecorded)} shard(s) written before file records "
                         "were kept: headers checked, no sizes or checksums to compare")
        if check.ok:
            lines.append(f"ok: region store {path}: {check.shards} shards, {check.images} images, "
                         f"{check.files} files; {how} match")
        else:
            lines.append(f"DAMAGED: region store {path}: {len(check.damaged)} of {check.shards} "
                         "shards damaged (a run moves them to damaged/ and re-extracts their images)")
        return check.ok, lines
    if (path / "search.json").is_file() or (path / "index.json").is_file():
        problems = index_dir_problems(path, checksums=checksums)
        if not problems:
            return True, [f"ok: index dir {path}: {how} match"]
        return False, [f"DAMAGED index dir {path}: {p}" for p in problems] + [
            f"DAMAGED: index dir {path} (a run rebuilds it)"]
    raise ValueError(f"{path} is neither a claid region store (manifest.json) nor an index dir "
                     "(search.json)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="claid verify",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("path", help="a region store (regions-<hash>) or index dir (index-<hash>)")
    parser.add_argument("--sizes-only", action="store_true", help="skip the sha256 checksums")
    args = parser.parse_args(argv)
    try:
        ok, lines = verify_path(args.path, checksums=not args.sizes_only)
    except ValueError as err:
        sys.exit(f"error: {err}")
    print("\n".join(lines))
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
