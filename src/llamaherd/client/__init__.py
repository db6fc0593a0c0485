"""What talks to the server: the `llamaherd` command line and its REST client."""
