"""The `kiln` command."""

from batchkiln.cli import demo, operate, simulate
from batchkiln.cli.app import app

__all__ = ["app", "demo", "operate", "simulate"]
