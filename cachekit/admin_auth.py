"""Who may use the admin sub-application: the bearer token, or a browser's session cookie.

- `Authorization: Bearer <admin_token>` opens every path and method.
- A browser cannot send that header when it navigates, so `POST {prefix}/login` with the
  form field `token` (compared in constant time) sets the cookie `SESSION_COOKIE`: an
  expiry and an HMAC-SHA256 of it keyed by the token, never the token itself
  (`Path={prefix}`, HttpOnly, SameSite=Strict, Secure on https, `Max-Age` 12 hours). The
  cookie opens GET and HEAD only (and `POST {prefix}/logout`, which deletes it): purges
  still need the header, so no other site can make a signed-in browser purge.
- Without either, every path and method gets the same 401: JSON, or for clients that
  accept `text/html` a sign-in form, byte-identical whatever the path (it names only
  `{prefix}/login`). A wrong token at `/login` gets that same 401.

Guessing is limited: a client address whose wrong tokens (at `/login` or in a bearer
header) reach `FAILED_ATTEMPTS_PER_MINUTE` within a minute gets `429 Too Many Requests`,
with `Retry-After`, for its credentials until that minute is over; they are not even
compared meanwhile. Behind a proxy every client shares the proxy's address, so an attack
then delays everyone's sign-in by at most a minute at a time; valid session cookies keep
working (an HMAC cannot be guessed, so cookies are not counted).

The cookie cannot be revoked on the server before it expires, short of changing the
token (which voids every cookie made with the old one); logging out deletes it in the
browser.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import hdrs, web

SESSION_COOKIE: Final = "cachekit_admin"
SESSION_SECONDS: Final = 12 * 3600
#: Tells the MAC of a session cookie from any other use of the token as a key.
_PURPOSE: Final = b"cachekit admin session\x00"
_SAFE_METHODS: Final = frozenset({hdrs.METH_GET, hdrs.METH_HEAD})
#: Every admin answer: never stored by a browser or proxy, never framed, no referrer.
SECURITY_HEADERS: Final = {
    hdrs.CACHE_CONTROL: "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_LOGIN_CSP: Final = "default-src 'none'; form-action 'self'; frame-ancestors 'none'"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Wrong tokens one client address may present per minute before it must wait.
FAILED_ATTEMPTS_PER_MINUTE: Final = 10
#: Client addresses tracked at once (clear-when-full: the table stays under ~200 KiB).
TRACKED_ADDRESSES: Final = 1024
_WINDOW_SECONDS: Final = 60.0


class FailedAttempts:
    """Wrong tokens per client address, counted in fixed one-minute windows."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        #: address -> (start of its window, wrong tokens in it)
        self._windows: dict[str, tuple[float, int]] = {}

    def wait(self, address: str) -> int:
        """Seconds `address` must wait before its credentials are checked again (0: none)."""
        window = self._windows.get(address)
        if window is None:
            return 0
        started, failures = window
        left = started + _WINDOW_SECONDS - self._clock()
        if left <= 0:
            del self._windows[address]
            return 0
        return math.ceil(left) if failures >= FAILED_ATTEMPTS_PER_MINUTE else 0

    def failed(self, address: str) -> None:
        """Count one wrong token from `address`."""
        now = self._clock()
        started, failures = self._windows.get(address, (now, 0))
        if now >= started + _WINDOW_SECONDS:
            started, failures = now, 0
        if address not in self._windows and len(self._windows) >= TRACKED_ADDRESSES:
            self._windows.clear()
        self._windows[address] = (started, failures + 1)


def session_value(token: bytes, expires: int) -> str:
    """The cookie's value for a session ending at Unix time `expires`."""
    mac = hmac.new(token, _PURPOSE + str(expires).encode("ascii"), hashlib.sha256)
    return f"{expires}.{mac.hexdigest()}"


def session_is_valid(token: bytes, value: str, now: float) -> bool:
    """Whether a cookie value was made with `token` and has not expired at `now`."""
    expires, dot, _ = value.partition(".")
    if not dot or not expires.isdigit() or len(expires) > 12:
        return False
    if not now < int(expires) <= now + SESSION_SECONDS + 60:
        return False
    expected = session_value(token, int(expires)).encode("ascii")
    return hmac.compare_digest(value.encode("utf-8", "surrogateescape"), expected)


def bearer_is_valid(token: bytes, request: web.Request) -> bool:
    """Whether the request's `Authorization` header is `Bearer <token>`."""
    scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    supplied = credentials.strip().encode("utf-8", "surrogateescape")
    # compare_digest runs in time independent of where the bytes differ.
    return scheme.lower() == "bearer" and hmac.compare_digest(supplied, token)


class AdminAuth:
    """The guard middleware and the login and logout handlers of one admin mount."""

    def __init__(self, token: bytes, prefix: str, clock: Callable[[], float] = time.time):
        self._token = token
        self.prefix = prefix.rstrip("/")
        self.login_path = f"{self.prefix}/login"
        self.logout_path = f"{self.prefix}/logout"
        self._clock = clock
        self.attempts = FailedAttempts(clock)
        form = html.escape(self.login_path, quote=True)
        self._login_page = (
            "<!doctype html>\n<html lang=en><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width'>"
            "<title>cachekit admin</title>"
            f"<form method=post action='{form}'>"
            "<p><label>Admin token <input type=password name=token required"
            " autocomplete=current-password autofocus></label>"
            " <button>Sign in</button></form></html>\n"
        ).encode()

    @property
    def middleware(self) -> Any:
        """The guard: answers `unauthorized()` unless the request may pass."""

        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            logs_in = request.method == hdrs.METH_POST and request.path == self.login_path
            if logs_in or hdrs.AUTHORIZATION in request.headers:
                wait = self.attempts.wait(request.remote or "")
                if wait:
                    return self.too_many_attempts(wait)
            if logs_in:
                return await self.login(request)
            if not self.allows(request):
                if hdrs.AUTHORIZATION in request.headers:
                    self.attempts.failed(request.remote or "")
                return self.unauthorized(request)
            response = await handler(request)
            response.headers.update(SECURITY_HEADERS)
            return response

        return guard

    def allows(self, request: web.Request) -> bool:
        """The bearer token for anything; the session cookie for reading and logging out."""
        if bearer_is_valid(self._token, request):
            return True
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is None:
            return False
        reads = request.method in _SAFE_METHODS
        logs_out = request.method == hdrs.METH_POST and request.path == self.logout_path
        return (reads or logs_out) and session_is_valid(self._token, cookie, self._clock())

    def unauthorized(self, request: web.Request) -> web.Response:
        """The one 401 of every path: the sign-in form for browsers, else JSON."""
        headers = {**SECURITY_HEADERS, hdrs.WWW_AUTHENTICATE: 'Bearer realm="cachekit"'}
        if "text/html" in request.headers.get(hdrs.ACCEPT, ""):
            headers["Content-Security-Policy"] = _LOGIN_CSP
            return web.Response(
                body=self._login_page,
                status=401,
                content_type="text/html",
                charset="utf-8",
                headers=headers,
            )
        return web.json_response({"error": "unauthorized"}, status=401, headers=headers)

    def too_many_attempts(self, wait: int) -> web.Response:
        """The answer to credentials from an address that presented too many wrong ones."""
        headers = {**SECURITY_HEADERS, hdrs.RETRY_AFTER: str(wait)}
        return web.json_response({"error": "too many attempts"}, status=429, headers=headers)

    async def login(self, request: web.Request) -> web.StreamResponse:
        """`POST {prefix}/login`: the form's token, right, sets the session cookie and
        goes to the dashboard; wrong or missing, the same 401 as any path."""
        try:
            form = await request.post()
        except (ValueError, web.HTTPException):  # not a form, or too large
            return self.unauthorized(request)
        token = form.get("token")
        supplied = token.encode("utf-8", "surrogateescape") if isinstance(token, str) else b""
        if not hmac.compare_digest(supplied, self._token):
            self.attempts.failed(request.remote or "")
            return self.unauthorized(request)
        expires = int(self._clock()) + SESSION_SECONDS
        response = self._to_dashboard()
        response.set_cookie(
            SESSION_COOKIE,
            session_value(self._token, expires),
            max_age=SESSION_SECONDS,
            path=self.prefix or "/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """`POST {prefix}/logout` (behind the guard): delete the cookie, back to sign-in."""
        response = self._to_dashboard()
        response.del_cookie(
            SESSION_COOKIE, path=self.prefix or "/", secure=request.secure, samesite="Strict"
        )
        return response

    def _to_dashboard(self) -> web.Response:
        headers: dict[str, str] = {**SECURITY_HEADERS, hdrs.LOCATION: f"{self.prefix}/"}
        return web.Response(status=303, headers=headers)
