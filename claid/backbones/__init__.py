"""Detector backbones: image -> PatchGrid (``conf/backbone/``).

- ``base.Backbone``: the contract.
- ``timm_vit.TimmViTBackbone``: DINO / DINOv2 / SigLIP / supervised ViTs via timm.
- ``preprocessing``: resize policy, crop to the patch grid, normalisation.
- ``weights``: published / local / seeded-random weights, ``WeightsUnavailableError``.
"""
