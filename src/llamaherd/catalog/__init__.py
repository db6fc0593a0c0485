"""Model files: what they are, and the built-in demo model."""

from llamaherd.catalog.demo_model import DEMO_MODEL_NAME, write_demo_model
from llamaherd.catalog.gguf import GgufSummary, is_gguf_file, read_gguf_summary

__all__ = [
    "DEMO_MODEL_NAME",
    "GgufSummary",
    "is_gguf_file",
    "read_gguf_summary",
    "write_demo_model",
]
