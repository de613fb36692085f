"""What wraps every request: the upload cap (:class:`BodyLimit`), the error envelope for
whatever goes wrong (:func:`install_error_handlers`), fault injection (:class:`Faults`) and an
``x-request-id`` header on every response (:class:`RequestId`), as the hosted API sends.

Fault injection, for testing clients' retry logic (off unless set): ``FTKIT_FAULTS="chat=429:3"``
makes the first 3 chat-completion requests fail with HTTP 429 (``rate_limit_exceeded``); any
status works (``chat=503:2``: server errors, ``chat=400:1``: a client error). /health shows how
many injected faults remain.
"""

from __future__ import annotations

import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .request_check import param_name
from .wire import APIError


class Faults:
    """Injected failures per route: ``"chat=429:3"`` -> {"chat": [429, 3]} (status, failures left)."""

    ROUTES = ("chat",)

    def __init__(self, spec: str = "") -> None:
        self.left: dict[str, list[int]] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            route, _, rest = part.partition("=")
            status, _, count = rest.partition(":")
            if route not in self.ROUTES or not status.isdigit() or not 400 <= int(status) <= 599 or not count.isdigit():
                raise ValueError(f"FTKIT_FAULTS: cannot read {part!r}; expected e.g. chat=429:3")
            self.left[route] = [int(status), int(count)]

    def health(self) -> dict:
        return {route: {"status": status, "remaining": left} for route, (status, left) in self.left.items()}

    def inject(self, route: str) -> None:
        fault = self.left.get(route)
        if not fault or fault[1] <= 0:
            return
        fault[1] -= 1  # dependencies of async routes run on the event loop, one at a time: no lock needed
        status = fault[0]
        if status == 429:
            raise APIError(429, "Rate limit reached (injected by FTKIT_FAULTS)", type="requests",
                           code="rate_limit_exceeded")
        if status >= 500:
            raise APIError(status, "The server had an error while processing your request (injected by FTKIT_FAULTS)",
                           type="server_error")
        raise APIError(status, "Injected client error (FTKIT_FAULTS)", code="injected_fault")


def install_error_handlers(app: FastAPI, log) -> None:
    """Every error leaves in OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}``."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        param = param_name(first.get("loc", ())[1:]) or None
        message = f"Invalid request: {first.get('msg', 'bad request')}" + (f" ('{param}')" if param else "")
        return JSONResponse(APIError(400, message, param=param, code="invalid_value").body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            err = APIError(404, f"Unknown request URL: {request.method} {request.url.path}", code="unknown_url")
        elif exc.status_code == 405:
            err = APIError(405, f"Method {request.method} is not allowed for {request.url.path}",
                           code="method_not_allowed")
        else:
            err = APIError(exc.status_code, str(exc.detail))
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        log(f"internal error on {request.method} {request.url.path}: {type(exc).__name__}: {exc}")
        return JSONResponse(APIError(500, f"The server had an error while processing your request: "
                                          f"{type(exc).__name__}", type="server_error").body(), status_code=500)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over the upload cap while they stream in (413), whether or not the
    client sent a Content-Length -- nothing larger is ever spooled to disk.

    Once the cap is crossed the app's own reaction (a body-parsing error) is discarded and the
    413 in OpenAI's envelope is sent instead.
    """

    def __init__(self, app, max_bytes: int, too_large) -> None:
        self.app, self.max_bytes, self.too_large = app, max_bytes, too_large

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        err = self.too_large()
        refuse = JSONResponse(err.body(), status_code=err.status)
        declared = dict(scope.get("headers") or {}).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await refuse(scope, receive, send)
        seen, exceeded = 0, False

        async def counted():
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                exceeded = True
                raise _TooLarge
            return message

        async def guarded_send(message):
            if not exceeded:
                await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except _TooLarge:
            pass
        if exceeded:
            await refuse(scope, receive, send)


class RequestId:
    """Every HTTP response -- errors and 413s included -- carries ``x-request-id: req_<32 hex>``,
    as the hosted API's do; the ``openai`` SDK reads it into ``response._request_id`` (and
    ``APIError.request_id``). Outermost middleware, so nothing leaves without it."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = (b"x-request-id", f"req_{uuid.uuid4().hex}".encode())

        async def tagged(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await self.app(scope, receive, tagged)
