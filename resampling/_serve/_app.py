"""The HTTP layer of ``cotscope serve``: the FastAPI routes, reading the body within its size limit, and uvicorn's
h11 protocol with a read deadline and a handle to close a connection without answering."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from resampling._serve._requests import _ClientGone, _HTTPError, _loads

if TYPE_CHECKING:
    from resampling._serve._server import CompletionServer

_log = logging.getLogger("cotscope.serve")

# -- the transport: read timeout, and a handle to close a connection without answering ---------------------------


def _protocol_class(read_timeout_s: float) -> type:
    """uvicorn's h11 protocol with a deadline for receiving a whole request, and the transport in the ASGI scope."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class _Protocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _answered: Any = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            app = self.app

            async def with_transport(scope: dict, receive: Any, send: Any) -> None:
                scope["cotscope.transport"] = transport
                await app(scope, receive, send)

            self.app = with_transport
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._timer = self.loop.call_later(read_timeout_s, self._timed_out)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _timed_out(self) -> None:
            self._timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and self.cycle is not self._answered and not self.cycle.more_body:
                self._disarm()  # a whole request is in: the deadline stops while it is served

        def on_response_complete(self) -> None:
            self._answered = self.cycle
            self._arm()
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return _Protocol


async def _drop_connection(scope: dict) -> None:
    """Close the connection without an answer (``reset`` and ``timeout`` faults)."""
    transport = scope.get("cotscope.transport")
    if transport is not None:
        transport.abort()
    for _ in range(3):
        await asyncio.sleep(0)  # let uvicorn see the disconnect, so it does not try to answer


async def _disconnected(request: Request) -> None:
    """Returns when the client has closed the connection (after the body is read, uvicorn's ``receive`` waits for
    nothing else)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _client(request: Request) -> str:
    return f"client {request.client.host}:{request.client.port}" if request.client else "a client"


async def read_body(request: Any, limit: int) -> bytes:
    """The body, its size checked from ``Content-Length`` before reading and while reading a chunked one."""
    too_big = _HTTPError(
        413,
        f"the request body is over this server's limit of {limit} bytes (--max-body-bytes)",
        kind="invalid_request_error",
        headers={"Connection": "close"},
    )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise _HTTPError(400, f"Content-Length {declared[:40]!r} is not a byte count")
        if int(declared) > limit:
            raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


# -- the HTTP routes --------------------------------------------------------------------------------------------


def _make_app(server: CompletionServer) -> Any:
    app = FastAPI(title="cotscope serve", docs_url=None, redoc_url=None, openapi_url=None)
    unauthorized = {"error": {"message": "invalid or missing API key", "type": "authentication_error"}}

    def error(exc: _HTTPError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def no_route(request: Request, exc: HTTPException) -> JSONResponse:
        path = request.url.path
        return error(
            _HTTPError(exc.status_code, f"no route {path}; use POST /v1/completions", kind="NotFoundError")
        )

    @app.get("/health")
    @app.get("/ping")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    @app.get("/models")
    async def models(request: Request) -> Any:
        if not server.authorized(request.headers.get("authorization")):
            return JSONResponse(unauthorized, status_code=401)
        return server.models()

    @app.post("/v1/completions")
    @app.post("/completions")
    async def completions(request: Request) -> Any:
        server._count("requests")
        try:
            # Cheap checks first: the size (from the header) and the key, before a byte of the body is read.
            declared = request.headers.get("content-length")
            if declared is not None and (
                not declared.isdigit() or int(declared) > server.limits.max_body_bytes
            ):
                await read_body(request, server.limits.max_body_bytes)  # raises the 400/413
            if not server.authorized(request.headers.get("authorization")):
                server._count("errors")
                return JSONResponse(unauthorized, status_code=401, headers={"Connection": "close"})
            raw = await read_body(request, server.limits.max_body_bytes)
        except _HTTPError as exc:
            server._count("errors")
            return error(exc)
        except ClientDisconnect:  # one line, not a traceback: nothing was done for the request
            server._count("disconnected")
            _log.info(
                "%s disconnected before sending the whole request body; the request is dropped",
                _client(request),
            )
            return Response(status_code=400)  # never sent: the connection is gone
        fault = server._draw_fault()
        if fault == "timeout":
            deadline = time.monotonic() + server.hang_s
            while time.monotonic() < deadline and not server._stopping.is_set():
                await asyncio.sleep(0.02)
            await _drop_connection(request.scope)
            return Response(status_code=500)  # never sent: the connection is closed
        if fault == "reset":
            await _drop_connection(request.scope)
            return Response(status_code=500)
        if fault is not None and fault.isdigit():
            message = {"429": "rate limit exceeded (injected fault)"}.get(fault, f"injected fault {fault}")
            return error(_HTTPError(int(fault), message, kind="server_error"))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            response = await server.complete(server.parse(_loads(raw)), gone)
        except _HTTPError as exc:
            server._count("errors")
            return error(exc)
        except _ClientGone as exc:
            _log.info(
                "%s disconnected while its request was decoded; its remaining work is dropped (%d rollouts were "
                "decoded)",
                _client(request),
                exc.args[0],
            )
            return Response(status_code=499)  # never sent: the connection is gone
        finally:
            gone.cancel()
        if fault == "garbled":
            data = json.dumps(response).encode()
            return Response(data[: max(1, len(data) // 2)], media_type="application/json")
        if fault == "short":
            response["choices"] = response["choices"][:-1]
        return JSONResponse(response)

    return app
