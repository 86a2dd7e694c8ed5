"""A guarded admin API: `setup_admin(app, prefix="/_cache")` mounts a sub-application that
answers only requests bearing the `admin_token` (`CACHEKIT_ADMIN_TOKEN`).

- `GET {prefix}/stats`: each handler's requests by result and the counters, added up over
  every worker on a shared store (`cachekit.worker_stats`), with this process's counters
  and store figures, as JSON.
- `POST {prefix}/purge` with a JSON body, one of `{"tags": [...]}`, `{"keys": [...]}`,
  `{"handler": "get_product", "params": {"id": "7"}}` or `{"namespace": true}`, and
  optionally `"soft": true`: answers what was purged. Bad JSON or unknown fields: 400.
- `GET {prefix}/keys[?handler=NAME]`: distinct keys stored per handler, and a warning when
  they keep growing (`admin_keys.py`).

- `GET {prefix}/`: the live dashboard (`cachekit.dashboard`), for browsers signed in with
  `POST {prefix}/login` (`cachekit.admin_auth`).

The guard (`cachekit.admin_auth`) runs before routing can say anything: every path under
the prefix, known or not, and every method, gets the same 401 without the token (the token
is compared in constant time, never logged or echoed) or, for reading, a session cookie.
The sub-application refuses to mount without a token of at least `MIN_TOKEN_CHARS`
characters.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web
from pydantic import SecretStr

from cachekit import worker_stats
from cachekit.admin_auth import AdminAuth
from cachekit.admin_keys import keys_report
from cachekit.app import get_cache
from cachekit.backends.base import StoreError
from cachekit.cache import Cache
from cachekit.dashboard import mount_dashboard
from cachekit.invalidation import SPEC_ATTRIBUTE
from cachekit.settings import SettingsError

MIN_TOKEN_CHARS: Final = 32
#: Purge bodies are small; anything bigger is refused before it is read.
MAX_BODY_BYTES: Final = 64 << 10
_CACHE: Final = web.AppKey("cachekit_admin_cache", Cache)
_ROUTER: Final = web.AppKey("cachekit_admin_router", web.UrlDispatcher)
_PURGE_FIELDS: Final = frozenset({"tags", "keys", "handler", "params", "namespace", "soft"})


def setup_admin(
    app: web.Application, prefix: str = "/_cache", *, token: SecretStr | str | None = None
) -> web.Application:
    """Mount the admin API on `app` (after `setup_cache`) under `prefix`; `token` defaults
    to the `admin_token` setting. Raises `SettingsError` without a long enough token."""
    cache = get_cache(app)
    secret = token if token is not None else cache.settings.admin_token
    value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if value is None or len(value) < MIN_TOKEN_CHARS:
        raise SettingsError(
            f"CACHEKIT_ADMIN_TOKEN: the admin API needs a token of at least {MIN_TOKEN_CHARS}"
            " characters (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    auth = AdminAuth(value.encode("utf-8"), prefix)
    admin = web.Application(middlewares=[auth.middleware], client_max_size=MAX_BODY_BYTES)
    admin[_CACHE] = cache
    admin[_ROUTER] = app.router
    admin.router.add_get("/stats", _stats)
    admin.router.add_post("/purge", _purge)
    # The page, its assets, /history, /logout; on Redis, figures of every worker.
    mount_dashboard(admin, cache, auth, app.get(worker_stats.REPORTER))
    admin.router.add_get("/keys", keys_report)
    # Every other path and method, so that the guard answers them before routing does.
    admin.router.add_route("*", "/{tail:.*}", _not_found)
    app.add_subapp(prefix.rstrip("/") or "/", admin)
    return admin


async def _not_found(request: web.Request) -> web.Response:
    return web.json_response({"error": "not found"}, status=404)


async def _stats(request: web.Request) -> web.Response:
    reporter = request.config_dict.get(worker_stats.REPORTER)
    return web.json_response(await worker_stats.stats_view(request.app[_CACHE], reporter))


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _purge(request: web.Request) -> web.Response:
    cache = request.app[_CACHE]
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return _bad("the body is not JSON")
    if not isinstance(body, dict):
        return _bad("the body must be a JSON object")
    unknown = sorted(set(body) - _PURGE_FIELDS)
    if unknown:
        return _bad(f"unknown fields: {', '.join(unknown)}")
    soft = body.get("soft", False)
    if not isinstance(soft, bool):
        return _bad("soft must be true or false")
    kinds = [name for name in ("tags", "keys", "handler", "namespace") if name in body]
    if len(kinds) != 1:
        return _bad("give exactly one of tags, keys, handler, namespace")
    kind = kinds[0]
    if "params" in body and kind != "handler":
        return _bad("params go with handler")
    try:
        if kind == "namespace":
            if body["namespace"] is not True or soft:
                return _bad("namespace must be true (and cannot be soft)")
            await cache.clear()
            return web.json_response({"purged": "namespace"})
        if kind in ("tags", "keys"):
            names = body[kind]
            if (
                not isinstance(names, list)
                or not names
                or not all(isinstance(name, str) and name for name in names)
            ):
                return _bad(f"{kind} must be a non-empty list of non-empty strings")
            if kind == "tags":
                count = await cache.invalidate_tags(*names, soft=soft)
            else:
                count = await cache.invalidate(*names, soft=soft)
            return web.json_response({"purged": kind, kind: names, "entries": count})
        return await _purge_handler(request, cache, body, soft)
    except StoreError:
        return web.json_response({"error": "the cache store did not answer"}, status=503)


async def _purge_handler(
    request: web.Request, cache: Cache, body: dict[str, Any], soft: bool
) -> web.Response:
    name, params = body["handler"], body.get("params", {})
    if not isinstance(name, str) or not isinstance(params, dict):
        return _bad("handler must be a name and params an object")
    if not all(isinstance(value, str | int) for value in params.values()):
        return _bad("params values must be strings or numbers")
    handler = _handler_named(request.app[_ROUTER], name)
    if handler is None:
        return _bad(f"no @cached handler named {name!r} is routed in this app")
    try:
        count = await cache.invalidate(handler, soft=soft, **{k: str(v) for k, v in params.items()})
    except (TypeError, LookupError, KeyError, ValueError) as exc:
        return _bad(str(exc))
    return web.json_response({"purged": "handler", "handler": name, "entries": count})


def _handler_named(router: web.UrlDispatcher, name: str) -> Callable[..., Any] | None:
    for resource in router.resources():
        for route in resource:
            served: Any = route.handler
            candidates: list[Any] = [served]
            if isinstance(served, type):
                candidates = [getattr(served, method, None) for method in dir(served)]
            for candidate in candidates:
                spec = getattr(candidate, SPEC_ATTRIBUTE, None)
                if spec is not None and spec.name == name:
                    return candidate  # type: ignore[no-any-return,unused-ignore]
    return None
