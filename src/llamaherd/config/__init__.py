"""What llamaherd reads: the config file's schema and its checks (settings), the models it
lists (model_specs), and the defaults the command line knows without reading anything."""
