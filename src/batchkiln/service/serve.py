"""Serving an ASGI app (the webhook receiver) inside the worker's own event loop.

uvicorn normally takes over SIGINT/SIGTERM; here the worker owns them (SIGTERM
finishes the current step), so the server's signal capture is switched off and
it is stopped when the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import uvicorn
from starlette.types import ASGIApp


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the worker handles signals


@contextlib.asynccontextmanager
async def serving(
    app: ASGIApp, *, host: str = "127.0.0.1", port: int = 8090, log_level: str = "warning"
) -> AsyncIterator[str]:
    """Serve `app` on host:port (0 picks a free port) while the block runs; yields
    the base URL."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off")
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            try:
                await task
            except BaseException as exc:  # uvicorn exits on a port it cannot bind
                raise OSError(f"could not serve on {host}:{port}: {exc!r}") from None
            raise OSError(f"could not serve on {host}:{port}")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        await task
