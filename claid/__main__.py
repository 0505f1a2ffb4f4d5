"""Command line:

    python -m claid search --index-dir DIR query.jpg [--box X1 Y1 X2 Y2]
    python -m claid search --index-dir DIR --text "a red mug"
    python -m claid fit-whitening STORE_DIR out.npz [--dim D]   (PCA-whitening for another dataset)
    python -m claid runs [--experiment NAME | --parent RUN_ID | --runs ID ...] [--param K=V] [--tag K=V]
                                             (the table of logged runs, e.g. a sweep's jobs)
    python -m claid verify DIR      (a region store or index dir: sizes + sha256 checksums)
    python -m claid export-coco STORE_DIR out.json [--dataset-root DIR]   (the regions as COCO JSON)

Each command prints what a user must fix as ``error: ...`` (no traceback); a bug in
claid still shows its traceback.
"""

import importlib
import sys

# command -> module whose main(argv) runs it (imported only when used: torch is slow to load)
COMMANDS = {"search": "claid.retrieval", "fit-whitening": "claid.index.fit_whitening", "runs": "claid.tracking.run_table",
            "verify": "claid.verify", "serve": "claid.serve.cli", "export-coco": "claid.detections.export"}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python -m claid {{{','.join(COMMANDS)}}} ...  (try: python -m claid search --help)")
    importlib.import_module(COMMANDS[sys.argv[1]]).main(sys.argv[2:])


if __name__ == "__main__":
    main()
