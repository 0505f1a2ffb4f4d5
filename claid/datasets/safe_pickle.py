"""Reading a pickle from a dataset folder without running code from it.

``pickle.load`` calls whatever callable the file names (``os.system``,
``pathlib.Path.write_text``...), so a downloaded ground-truth file could run code.
:func:`load_plain_pickle` accepts only what ground-truth files hold: the builtin
containers, strings, bytes and numbers (pickle opcodes, no callable needed), and
numpy arrays, dtypes and scalars, rebuilt through an allow-list of numpy's own
reconstructors. Any other global is refused with :class:`UnsafePickleError`
before it is looked up, so nothing it names is imported or called.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import io
import os
import pickle
from typing import Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a callable outside the allow-list; the message names it."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """The ``_codecs.encode`` call protocol-2 pickles use to carry bytes, limited to
    the encodings they use (no codec lookup by a name from the file)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {}
    core = np._core if hasattr(np, "_core") else np.core
    for package in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x names
        allowed[(f"{package}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = core.multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer  # protocol 5
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


_ALLOWED: dict[tuple[str, str], Any] = {
    **_numpy_globals(),
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("collections", "OrderedDict"): dict,
    ("_codecs", "encode"): _latin1_encode,
}


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, file, where: str) -> None:
        super().__init__(file, fix_imports=True, encoding="latin1")
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (``__builtin__.set``) as pickle's fix_imports maps them
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._where}: refused to load {module}.{name}: a ground-truth pickle holds "
                "only lists, dicts, strings, numbers and numpy arrays (the file may be "
                "tampered with; download it again)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._where}: persistent ids are not allowed")


def load_plain_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` accepting only plain data (see the module docstring).

    Raises:
        UnsafePickleError: the file names a callable outside the allow-list (nothing
            it names has been imported or called).
        pickle.UnpicklingError, EOFError: the file is not a valid pickle.
    """
    with open(path, "rb") as f:
        payload = f.read()
    return _PlainUnpickler(io.BytesIO(payload), os.fspath(path)).load()


def load_ground_truth_pickle(path: str | os.PathLike) -> dict:
    """A ``gnd_<name>.pkl`` ground truth (revisitop's or cirtorch's) as plain data.

    Raises:
        DatasetFormatError: the file names code to run, is not a readable pickle, or
            does not hold a dict; the message names the file.
    """
    import pickle

    from claid.datasets.files import DatasetFormatError

    try:
        # plain data only: a tampered ground truth must not run code
        data = load_plain_pickle(path)
    except UnsafePickleError as err:
        raise DatasetFormatError(str(err)) from None
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DatasetFormatError(f"{path}: not a readable pickle ({err})") from None
    if not isinstance(data, dict):
        raise DatasetFormatError(f"{path}: holds a {type(data).__name__}, not a dict")
    return data
