"""Region descriptors: image + regions -> one L2-normalised vector each (``conf/descriptor/``).

- ``base.RegionDescriptor``: the contract.
- ``pooling``: box / mask pooling (GeM, max, mean) on feature maps, pure functions.
- ``cnn.CNNRegionDescriptor``: ResNet / VGG maps via timm, RoI-pooled.
- ``vit_tokens.ViTTokenDescriptor``: pools the detector's own tokens (no second network).
- ``queries``: the run's query stage (one vector per image or text query).
"""
