"""``python -m demo_app``: serve the demo on DEMO_HOST:DEMO_PORT (default 127.0.0.1:8080)."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import secrets
import sys

from aiohttp import web
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError

from cachekit import CacheSettings
from demo_app.app import create_app
from demo_app.config import ConfigError, DemoConfig, redact_url

log = logging.getLogger("demo_app")


def load_cache_settings() -> CacheSettings:
    """Read ``CACHEKIT_*``; on bad values raise ``ConfigError`` naming the variables."""
    try:
        return CacheSettings()
    except ValidationError as exc:
        # Built from loc and msg only: the offending input may be a URL with a password.
        problems = "; ".join(
            f"CACHEKIT_{'__'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"invalid cache settings: {problems}") from None
    except SettingsError as exc:
        # pydantic-settings names the field, not the variable: 'field "ttls" from source ...'.
        match = re.search(r'field "([^"]+)"', str(exc))
        variable = f"CACHEKIT_{match.group(1).upper()}" if match else "a CACHEKIT_* variable"
        raise ConfigError(f"invalid cache settings: {variable} is not valid JSON") from None


def with_operator_extras(settings: CacheSettings) -> CacheSettings:
    """The demo's settings with an admin token (made up when none is set) and, when
    prometheus-client is installed and no path is set, metrics at /metrics."""
    update: dict[str, object] = {}
    if settings.admin_token is None:
        update["admin_token"] = SecretStr(secrets.token_urlsafe(32))
    if settings.metrics_path is None and importlib.util.find_spec("prometheus_client"):
        update["metrics_path"] = "/metrics"
    return settings.model_copy(update=update) if update else settings


def main() -> None:
    """Configure from the environment and serve until interrupted."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = DemoConfig.from_env(os.environ)
        settings = load_cache_settings()
    except ConfigError as exc:
        # A plain message and exit status 2 instead of a traceback: this is operator input.
        print(f"demo_app: error: {exc}", file=sys.stderr)
        sys.exit(2)
    store = "redis " + redact_url(settings.redis_url) if settings.redis_url else "memory"
    log.info(
        "starting on http://%s:%d (store: %s, upstream delay: %.3fs)",
        config.host,
        config.port,
        store,
        config.upstream_delay,
    )
    settings = with_operator_extras(settings)
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    if token is not None and "CACHEKIT_ADMIN_TOKEN" not in os.environ:
        # Made up for this run, so the admin API can be tried at once; printed to this
        # terminal only (set CACHEKIT_ADMIN_TOKEN to choose it).
        print(
            f"admin API: curl -H 'Authorization: Bearer {token}'"
            f" http://{config.host}:{config.port}/_cache/stats",
            flush=True,
        )
    if token is not None:
        # The token goes into the page's sign-in form, never into a URL.
        source = (
            "the token above"
            if "CACHEKIT_ADMIN_TOKEN" not in os.environ
            else "$CACHEKIT_ADMIN_TOKEN"
        )
        print(
            f"dashboard: http://{config.host}:{config.port}/_cache/ (sign in with {source})",
            flush=True,
        )
    if settings.metrics_path:
        log.info("metrics on http://%s:%d%s", config.host, config.port, settings.metrics_path)
    app = create_app(settings, upstream_delay=config.upstream_delay)
    try:
        web.run_app(app, host=config.host, port=config.port)
    except OSError as exc:
        # Typically the port is taken or the host is not an address of this machine.
        print(
            f"demo_app: error: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
