"""The version, on its own: the API and the command line read it without loading anything else."""

__version__ = "0.1.0"
