"""Regions in and out of claid as COCO files: another detector's results as claid
regions (``cutter=from_file``), and a region store as COCO JSON (``export-coco``).

    coco_masks.py   COCO RLE / polygons checked, decoded and encoded (pycocotools)
    read.py         RegionsFile: a results list or dataset dict -> regions per image
    file_regions.py RegionsFromFile: those regions described into the region store (a
                    region source of the extraction stage, chosen by cutter=from_file)
    export.py       python -m claid export-coco STORE out.json: the store as COCO JSON
"""
