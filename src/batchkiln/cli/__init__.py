"""The `kiln` command."""

from batchkiln.cli import cost, demo, events, operate, serve, simulate
from batchkiln.cli.app import app

__all__ = ["app", "cost", "demo", "events", "operate", "serve", "simulate"]
