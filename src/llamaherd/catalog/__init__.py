"""Model files: what they are (gguf), which files of a folder are models and what they cost
in memory (library), what llama-server lists (models), the demo model.

`demo_model` is not imported here: it needs numpy and gguf, which `serve` does not."""
