"""What happened, kept: every server's transitions and starts, per-minute request figures, the
last requests (SQLite, `history.py`), and every server's output in rotating files
(`logfiles.py`). Both subscribe to what the supervisors and the gateway publish and write off
the event loop; neither may ever stop llamaherd from serving, whatever the disk does."""
