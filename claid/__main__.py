"""Command line:

    python -m claid search --index-dir DIR query.jpg [--box X1 Y1 X2 Y2]
    python -m claid fit-whitening STORE_DIR out.npz [--dim D]   (PCA-whitening for another dataset)
"""

import sys

from claid.backbones.weights import WeightsUnavailableError
from claid.images import ImageError
from claid.index.fit_whitening import main as fit_whitening_main
from claid.retrieval import main as search_main

COMMANDS = {"search": search_main, "fit-whitening": fit_whitening_main}

# what a user must fix (a box, a path, an image file, weights): the message, no traceback
USER_ERRORS = (ValueError, OSError, ImageError, WeightsUnavailableError)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python -m claid {{{','.join(COMMANDS)}}} ...  (try: python -m claid search --help)")
    try:
        COMMANDS[sys.argv[1]](sys.argv[2:])
    except USER_ERRORS as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
