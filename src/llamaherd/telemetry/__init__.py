"""Everything that watches the herd, assembled: the measurements (metrics), the history
(store) and the alerts, started and stopped in one order around the herd's (see assembly.py).
The app's lifespan runs it; wiring decides from the settings what it holds."""
