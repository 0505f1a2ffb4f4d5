"""Regions in and out of claid as COCO files: another detector's results as claid
regions (``cutter=from_file``), and a region store as COCO JSON (``export-coco``).

    coco_masks.py   COCO RLE / polygons checked, decoded and encoded (pycocotools)
    read.py         RegionsFile: a results list or dataset dict -> regions per image
    stage.py        extract_from_file: those regions described into the region store
    export.py       python -m claid export-coco STORE out.json: the store as COCO JSON
"""
