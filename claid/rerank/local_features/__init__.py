"""Local descriptors for re-ranking by AMES (``rerank=ames``): per image, the top-k
patch tokens that a learned detector scores highest, stored compactly.

    detector.py    the 2-layer 1x1-conv attention scorer over a PatchGrid's tokens
    selection.py   top-k selection (optionally after 3x3 non-maxima suppression), positions
    binarise.py    128-bit codes by the ITQ projection of the binarised AMES model
    weight_file.py the published weight files (detector, AMES) or seeded random ones
    store.py       the per-image store: keyed, checksummed, resumable, read as a stranger's file
    extract_local.py  images -> store, and one query's descriptors at query time
"""
