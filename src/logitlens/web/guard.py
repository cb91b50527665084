"""The ASGI guard in front of the API: Host check, same-origin check, token, body size.

- Host: a request whose ``Host`` header names another host than the bound one (and its loopback aliases)
  is refused with 403: a web page on another site cannot reach the server through DNS rebinding.
- Origin: a browser request from another origin (``Origin`` or ``Sec-Fetch-Site: cross-site``) is refused
  with 403. There is no CORS: no ``Access-Control-*`` header is ever sent.
- Token: when the server has one (always when bound beyond loopback), every request needs it: the
  ``logitlens_token`` cookie (set by opening ``/?token=...``, as Jupyter does), ``Authorization: Bearer``
  or ``?token=``; otherwise 401.
- Size: a body over the limit is refused with 413, by its ``Content-Length`` or while it streams in;
  ``/api/open`` (uploads) has its own, larger limit.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["COOKIE", "Guard", "host_name"]

COOKIE = "logitlens_token"
UPLOAD_PATH = "/api/open"

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLarge(Exception):
    pass


def host_name(host: str) -> str:
    """The host part of a Host header value, lower-cased, without port or IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _reply(send: Send, status: int, detail: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        *headers],
        }
    )  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: see the module docstring. ``allowed_hosts``: host names (no ports) accepted in
    ``Host``; None accepts any (only for a wildcard bind, where the token is required)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: set[str] | None,
        token: str | None,
        max_body: int,
        max_upload: int,
    ):
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.token = token
        self.max_body = max_body
        self.max_upload = max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _reply(send, *refusal)
            return
        if self.token and self._token_in_query(scope) and scope["path"] == "/":
            await self._set_cookie(send)
            return
        limit = self.max_upload if scope["path"] == UPLOAD_PATH else self.max_body
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _reply(send, 413, _too_large(int(length), limit))
            return
        await self._sized(scope, receive, send, limit)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        """(status, detail) when the request is refused before it reaches the app, else None."""
        host = host_name(headers.get("host", ""))
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            return 403, (
                f"Host {headers.get('host', '')!r} is not this server's address; open it by "
                f"{sorted(self.allowed_hosts)[0]} (DNS rebinding protection)"
            )
        origin = headers.get("origin")
        if origin and origin != "null" and host_name(urlsplit(origin).netloc) != host:
            return (
                403,
                f"cross-origin requests are refused (Origin {origin!r}); open the page from this server",
            )
        if headers.get("sec-fetch-site") == "cross-site":
            return 403, "cross-site requests are refused; open the page from this server"
        if self.token and not self._has_token(scope, headers):
            return (
                401,
                "this server needs its token: open the URL with ?token=... that `logitlens serve` printed",
            )
        return None

    def _token_in_query(self, scope: Scope) -> str | None:
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        return values[0] if values else None

    def _has_token(self, scope: Scope, headers: dict[str, str]) -> bool:
        assert self.token is not None
        given = [self._token_in_query(scope)]
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given.append(auth[7:].strip())
        cookie = SimpleCookie()
        with contextlib.suppress(Exception):  # a malformed cookie header is no token
            cookie.load(headers.get("cookie", ""))
        if COOKIE in cookie:
            given.append(cookie[COOKIE].value)
        return any(g is not None and secrets.compare_digest(g.encode(), self.token.encode()) for g in given)

    async def _set_cookie(self, send: Send) -> None:
        """``/?token=...``: keep the token in an HttpOnly same-site cookie and reload the page without it."""
        assert self.token is not None
        cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [(b"location", b"/"), (b"set-cookie", cookie.encode()), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def _sized(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Run the app, counting the body as it arrives; past ``limit`` answer 413 instead of whatever the
        app says about the cut-off body (FastAPI makes a failed read a 400)."""
        seen = 0
        over = False
        started = False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if over:
                return  # the app's answer to the cut-off body is replaced by the 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, counted, tracked)
        if over and not started:
            await _reply(send, 413, _too_large(seen, limit))


def _too_large(size: int, limit: int) -> str:
    return f"the request body is too large ({size:,} bytes; the limit is {limit:,} bytes)"
