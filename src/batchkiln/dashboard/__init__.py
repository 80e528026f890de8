"""The live lifecycle dashboard (issue 15), served by `kiln serve` at `/`.

Placeholder until the dashboard lands: `mount_dashboard` is the mount point the
service calls; it adds the dashboard's routes to the FastAPI app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from batchkiln.app import App


def mount_dashboard(api: FastAPI, app: App) -> None:
    """Add the dashboard's pages, static files and helper routes to `api`."""
    del api, app  # nothing yet


__all__ = ["mount_dashboard"]
