"""Benchmarks as :class:`claid.structures.Benchmark`: one module per dataset layout.

Each ``conf/dataset/<name>.yaml`` targets a ``load_<name>(root, ...)`` function
here; a missing dataset raises :class:`DatasetNotFoundError` naming where to get
it and the layout expected under ``root``.

    manifest.py      a user's own folder of images (+ optional queries.jsonl)
    synthetic.py     generated from scikit-image's photos (the default benchmark)
    instre.py        INSTRE with gnd_instre.mat
    instance.py      Instance-160 / Instance-335 (lab layout)
    oxford_paris.py  Oxford5k / Paris6k, classic gt_files
    revisited.py     ROxford5k / RParis6k, gnd_r*.pkl
    holidays.py      INRIA Holidays
    coco.py          COCO 20k (train2014 subset) and COCO val2017, detection recall only
    ilias.py         ILIAS / mini-ILIAS
"""

from claid.datasets.files import DatasetFormatError, DatasetNotFoundError, list_images

__all__ = ["DatasetFormatError", "DatasetNotFoundError", "list_images"]
