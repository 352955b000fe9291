"""HTTP hardening every response and request goes through: security headers, trusted Host names,
and no state change from a cross-site form.

Input: the ASGI app and the ``api`` settings. Output: middleware (headers, hosts) and a dependency
(writes), each answering a refusal as JSON ``{"detail": ...}`` like every other API error.

Why each:
- headers (every response, errors included): a CSP that allows the status page's own files only
  (its overlays are ``blob:`` images), no framing (clickjacking), no MIME sniffing, no referrer;
- trusted hosts: a Host header naming some other site is refused, which defeats DNS rebinding (a
  page on an attacker's domain that resolves to 127.0.0.1 reaching the loopback API); loopback
  names, ``api.host`` and ``api.allowed_hosts`` are accepted;
- writes: without ``api.token``, a POST from any web page the operator opens could reach
  ``/reprocess``; a cross-site form or ``fetch`` without a CORS preflight can only send
  ``text/plain``, form or multipart bodies and no custom header, so a state-changing request must
  carry ``Content-Type: application/json`` or an ``X-Requested-With`` header. With a token, the
  bearer header (which no browser adds by itself) already proves the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from fastapi import HTTPException, Request, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onconode.config import ApiSettings

_CSP = ("default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
# FastAPI's /docs and /redoc pages load their scripts and styles from a CDN and start them inline.
_DOCS_CSP = ("default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com; "
             "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
             "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; worker-src 'self' blob:; "
             "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
_DOCS = ("/docs", "/redoc")
_HEADERS = [(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer")]
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_WILDCARDS = ("0.0.0.0", "::", "")
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class SecurityHeaders:
    """Add the security headers to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = _DOCS_CSP if str(scope.get("path", "")).startswith(_DOCS) else _CSP

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                added = [(n, v) for n, v in [(b"content-security-policy", csp.encode()), *_HEADERS] if n not in names]
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, with_headers)


def allowed_hosts(settings: ApiSettings) -> frozenset[str]:
    """The Host names the API answers to: loopback, ``api.host`` unless it is a wildcard, and
    ``api.allowed_hosts`` (``*.example.org`` matches any subdomain)."""
    named: Iterable[str] = [*_LOOPBACK, *([] if settings.host in _WILDCARDS else [settings.host]),
                            *settings.allowed_hosts]
    return frozenset(name.lower().strip("[]") for name in named)


def host_allowed(host_header: str, allowed: frozenset[str]) -> bool:
    """Whether a Host header (with or without a port, IPv6 in brackets) names one of ``allowed``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":")[0]
    if host in allowed:
        return True
    return any(pattern.startswith("*.") and host.endswith(pattern[1:]) for pattern in allowed)


class TrustedHosts:
    """Refuse a request whose Host header names a host not in ``allowed`` (400, JSON)."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((value.decode("latin-1") for name, value in scope.get("headers", []) if name == b"host"), "")
        if host_allowed(host, self.allowed):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": "the Host header names a host this API does not serve"}).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def refuse_cross_site_writes(request: Request) -> None:
    """A dependency of every protected route: a write needs JSON or a custom header (see above).

    Raises
    ------
    HTTPException
        403 for a state-changing request that a cross-site page could have sent.
    """
    if request.method not in _WRITES or request.app.state.settings.api.token is not None:
        return
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json" or "x-requested-with" in request.headers:
        return
    raise HTTPException(status.HTTP_403_FORBIDDEN,
                        "a state-changing request needs Content-Type: application/json or an X-Requested-With "
                        "header (a cross-site form can send neither)")


def install(app: Any, settings: ApiSettings) -> None:
    """Add the middleware to ``app``: headers outermost, so that a refused host gets them too."""
    app.add_middleware(TrustedHosts, allowed=allowed_hosts(settings))
    app.add_middleware(SecurityHeaders)
