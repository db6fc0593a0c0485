"""What runs the server: `llamaherd serve` (the process, its signals, its drain), the config's
reload, and the service manager's readiness notices."""
