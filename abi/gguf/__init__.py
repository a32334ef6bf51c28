"""GGUF files: read (memory-mapped, validated) and write."""
from .constants import GGMLType, GGUFValueType, Keys
from .reader import GGUFFile, TensorInfo, load
from .writer import GGUFWriter

__all__ = ["GGMLType", "GGUFValueType", "Keys", "GGUFFile", "TensorInfo", "load", "GGUFWriter"]
