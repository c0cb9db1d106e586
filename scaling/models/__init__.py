"""Model families and their registry (``python -m scaling.models`` lists it)."""

from scaling.models.registry import ModelSpec, all_specs, families, get, ladder, register

__all__ = ["ModelSpec", "all_specs", "families", "get", "ladder", "register"]
