"""What backbones and descriptors share: image preprocessing (resizing, crops,
normalisation) and weight loading (timm / Hugging Face caches, local checkpoints,
the missing-weights message). Neither stage's package owns them."""
