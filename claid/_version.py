"""The package version, in a leaf module: anything may import it without pulling in
the rest of claid (``claid/__init__`` resolves its attributes lazily)."""

__version__ = "0.1.0"
