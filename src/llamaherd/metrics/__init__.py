"""Measurements: every proxied request (tokens, tokens/s, latency, time to first token) and
every supervised server (memory, CPU, slots), exported to Prometheus, the dashboard and the
history store. Measurement subscribes to what the gateway and the supervisors publish; nothing
here is on a decision path."""
