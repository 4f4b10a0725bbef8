"""The command line: `vaekit <command>`, a thin shell over the Python API."""

from vaekit.cli.main import main

__all__ = ["main"]
