"""The `kiln` command."""

from batchkiln.cli import demo, money, operate, simulate
from batchkiln.cli.app import app

__all__ = ["app", "demo", "money", "operate", "simulate"]
