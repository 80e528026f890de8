"""The live lifecycle dashboard (issue 15), served by `kiln serve` at `/`.

The seed's state diagram drawn from `batchkiln.lifecycle`, showing the served
App's own jobs live: counts per state from the event stream, cards on hover and
focus, the webhook / polling views with the real backoff schedule, cost badges,
a job list and job pages (timeline, retry lineage, costs, Done hygiene), and the
practice scenarios launched as real jobs on the built-in simulator.

`mount_dashboard(api, app)` is the mount point the service's FastAPI factory
calls; see `batchkiln.dashboard.routes` for the routes it adds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from batchkiln.app import App


def mount_dashboard(api: FastAPI, app: App) -> None:
    """Add the dashboard's pages, static files and helper routes to `api`."""
    from batchkiln.dashboard.routes import mount

    mount(api, app)


__all__ = ["mount_dashboard"]
