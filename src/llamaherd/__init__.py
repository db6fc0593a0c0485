"""llamaherd: supervisor and gateway for llama.cpp's llama-server."""
