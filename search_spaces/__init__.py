"""Search spaces: the architecture type, the op/block registry, the detector builder.

Layer 1 of the engine: knows torch, knows nothing of strategies, evaluators or tables.
"""
from .architecture import Architecture, ArchitectureError, Choice, Sample, SCHEMA_VERSION
from .errors import InputError
from .base import OpSpec, SearchSpace
from .registry import get_space, get_space_class, list_spaces, parse_architecture, register_space

__all__ = [
    "Architecture", "ArchitectureError", "Choice", "Sample", "SCHEMA_VERSION", "InputError", "OpSpec", "SearchSpace",
    "get_space", "get_space_class", "list_spaces", "parse_architecture", "register_space",
]
