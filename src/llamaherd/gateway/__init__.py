"""The gateway: one OpenAI-compatible front door for several models, each served by its own
llama-server. `scheduler` decides (who is loaded, served, queued, evicted); an owner carries the
decisions out and feeds the outcomes back; the proxy forwards requests upstream."""
