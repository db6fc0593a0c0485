"""Model files: what they are (gguf), what llama-server lists (models), the demo model.

`demo_model` is not imported here: it needs numpy and gguf, which `serve` does not."""
