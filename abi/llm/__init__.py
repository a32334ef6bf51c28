"""Local LLM inference on GGUF models."""
