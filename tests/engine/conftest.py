"""Fixtures of the engine tests (defined in tiny_parts.py)."""

from tests.engine.tiny_parts import components, image_folder  # noqa: F401
