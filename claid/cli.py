"""The ``claid`` command: one verb per tool that reads what ``run.py`` wrote.

    claid --help                     every verb with one line on what it does
    claid <verb> --help              that verb's options
    claid search --index-dir DIR query.jpg --box 10 20 200 180

``python -m claid <verb>`` runs the same code. Indexing and evaluating a collection
is ``python run.py`` (Hydra: ``python run.py --help`` lists its config groups).
Each verb lives in its own module, imported only when used (torch is slow to load),
and prints what a user must fix as one ``error: ...`` line.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from claid._version import __version__

# verb -> (module whose main(argv) runs it, one line for `claid --help`), in the order a
# user meets them: search an index, browse it, read logged runs, then the file tools
COMMANDS: dict[str, tuple[str, str]] = {
    "search": ("claid.retrieval",
               "search an index dir with a query image (and box) or a text; prints the ranked images"),
    "serve": ("claid.serve.cli",
              "instance search in the browser over a run's index, store and photos (HTTP API + page)"),
    "runs": ("claid.tracking.run_table",
             "the table of logged MLflow runs: an experiment, a sweep's jobs or chosen run ids"),
    "verify": ("claid.verify",
               "check a region store or an index dir for damage (sizes and sha256 checksums)"),
    "export-coco": ("claid.detections.export",
                    "write a region store's regions as a COCO dataset file (boxes, masks, hierarchy)"),
    "fit-whitening": ("claid.index.fit_whitening",
                      "fit a PCA-whitening on one region store, for index.whitening=file on another"),
}


def usage() -> str:
    """The text of ``claid --help``: every verb with its one-line explanation."""
    width = max(map(len, COMMANDS)) + 2
    lines = [
        "usage: claid <command> [options]      (the same: python -m claid <command> [options])",
        "",
        "claid: class-agnostic instance search. `python run.py` indexes and evaluates a",
        "collection (Hydra config: python run.py --help); these commands use what it wrote.",
        "",
        "commands:",
        *(f"  {verb:<{width}}{line}" for verb, (_, line) in COMMANDS.items()),
        "",
        "options:",
        f"  {'-h, --help':<{width}}this list",
        f"  {'--version':<{width}}claid's version",
        "",
        "`claid <command> --help` explains a command and its options.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``claid <verb> ...`` (``argv`` without the program name; default ``sys.argv[1:]``).
    No verb prints the verb list and exits with status 2; an unknown verb is a one-line error."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(), file=sys.stderr)
        raise SystemExit(2)
    verb, rest = args[0], args[1:]
    if verb in ("-h", "--help", "help"):
        print(usage())
        return
    if verb == "--version":
        print(f"claid {__version__}")
        return
    if verb not in COMMANDS:
        raise SystemExit(f"error: unknown command {verb!r}; the commands are {', '.join(COMMANDS)}"
                         " (claid --help)")
    # a verb's parser without its own prog names itself after sys.argv[0]
    sys.argv = [f"claid {verb}", *rest]
    importlib.import_module(COMMANDS[verb][0]).main(rest)


if __name__ == "__main__":
    main()
