"""CacheSettings: every operator-tunable knob, read from CACHEKIT_* environment variables."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from cachekit.backends.sentinel_url import parse_sentinel_url
from cachekit.encodings import parse_codings
from cachekit.ignored_query import parse_patterns

ENV_PREFIX = "CACHEKIT_"
NAMESPACE_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_NAME_NORMALISER = re.compile(r"[^a-z0-9]+")

# Finite: an infinite TTL or cool-down would never end (and cannot be encoded in an entry).
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class SettingsError(ValueError):
    """An environment variable or settings value is invalid; the message names the variable."""


def handler_setting_name(name: str) -> str:
    """Normalise a handler name the way per-handler settings are looked up.

    `CACHEKIT_TTLS__GET_PRODUCT` and `{"get_product": ...}` both address `get_product`;
    a view method `ProductView.get` is addressed as `productview_get`.
    """
    return _NAME_NORMALISER.sub("_", name.lower()).strip("_")


class CacheSettings(BaseSettings):
    """Cache configuration; each field is read from `CACHEKIT_<FIELD>` (nested with `__`)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
    )

    redis_url: str | None = Field(
        default=None, description="Redis URL; unset means the embedded in-process store."
    )
    namespace: str = Field(
        default="cachekit",
        pattern=NAMESPACE_PATTERN,
        description="Prefix of every stored key; letters, digits, '_', '.', '-'.",
    )
    enabled: bool = Field(default=True, description="False: decorated handlers run uncached.")
    default_ttl: Seconds = Field(
        default=60.0, description="TTL when neither settings, decorator nor response give one."
    )
    ttls: dict[str, Seconds] = Field(
        default_factory=dict, description="Per-handler TTL overrides, by handler name."
    )
    max_entry_bytes: int = Field(
        default=1 << 20, gt=0, description="Bodies larger than this are not stored."
    )
    memory_max_bytes: int = Field(
        default=64 << 20, gt=0, description="Byte budget of the embedded in-process store."
    )
    redis_timeout: float = Field(
        default=0.25,
        gt=0,
        allow_inf_nan=False,
        le=60,
        description="Seconds allowed for one store operation.",
    )
    failure_threshold: int = Field(
        default=3, ge=1, description="Consecutive store failures that open the circuit breaker."
    )
    failure_cooldown: float = Field(
        default=5.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds the store is skipped once the breaker is open.",
    )
    stale_ttl: Seconds = Field(
        default=0.0, description="Default stale-while-revalidate window after the TTL."
    )
    stale_ttls: dict[str, Seconds] = Field(
        default_factory=dict, description="Per-handler stale-while-revalidate overrides."
    )
    stale_if_error: Seconds = Field(
        default=0.0, description="Seconds past freshness a stale copy may replace an error."
    )
    lock_timeout: float = Field(
        default=5.0,
        gt=0,
        allow_inf_nan=False,
        description="Longest wait for another process's fill of a key.",
    )
    lock_ttl: float = Field(
        default=30.0,
        gt=0,
        allow_inf_nan=False,
        description="Lifetime of a fill lock; it can never outlive this.",
    )
    emit_cache_control: bool = Field(
        default=False,
        description="Add `Cache-Control: public, max-age=<remaining>` when the handler set none.",
    )
    heuristic_freshness: bool = Field(
        default=False,
        description=(
            "A response with Last-Modified and no freshness of its own (nor a TTL from the"
            " settings or the decorator) is fresh for 10 % of Date - Last-Modified."
        ),
    )
    heuristic_max_ttl: Seconds = Field(
        default=86400.0, description="Longest heuristic freshness (RFC 9111 §4.2.2)."
    )
    targeted_cache_control: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
        description=(
            "A targeted Cache-Control field (RFC 9213, e.g. CDN-Cache-Control) whose valid"
            " directives replace Cache-Control for cachekit's own decisions."
        ),
    )
    surrogate_key_header: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
        description=(
            "Header that carries a tagged response's tags to a CDN: Surrogate-Key (Fastly,"
            " space-separated), Cache-Tag (Cloudflare) or Edge-Cache-Tag (Akamai),"
            " comma-separated."
        ),
    )
    metrics_path: str | None = Field(
        default=None,
        pattern=r"^/[A-Za-z0-9/_.~-]*$",
        description=(
            "Path at which setup_cache serves Prometheus metrics (needs the prometheus extra);"
            " unset: no metrics."
        ),
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token of the admin API (cachekit.admin.setup_admin), at least 32"
            " characters; never logged or echoed."
        ),
    )
    compress: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("gzip",),
        description=(
            "Content codings stored with each compressible entry, in order of preference"
            " (gzip, br, zstd; e.g. 'br,gzip'); empty: none."
        ),
    )
    compress_min_bytes: int = Field(
        default=1024, ge=0, description="Bodies shorter than this are stored uncompressed."
    )
    ignore_query_params: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("utm_*", "fbclid", "gclid", "msclkid"),
        description=(
            "Query parameters left out of default keys, and out of the request their"
            " handlers see: comma-separated names (case-sensitive, decoded), `*` matching"
            " any characters; empty: none."
        ),
    )
    honor_request_cache_control: bool = Field(
        default=False,
        description="Act on the request's no-cache, no-store, max-age and only-if-cached.",
    )
    invalidate_on_unsafe: bool = Field(
        default=True,
        description="A 2xx/3xx answer to POST/PUT/PATCH/DELETE purges that path's entries.",
    )
    max_variants: int = Field(
        default=32, ge=1, le=10_000, description="Most Vary variants kept per URL (key)."
    )
    max_key_length: int = Field(
        default=250, ge=128, le=4096, description="Longer keys are replaced by a hash digest."
    )
    redis_mode: Literal["standalone", "cluster", "sentinel"] = Field(
        default="standalone",
        description=(
            "How to reach Redis. standalone: one server at CACHEKIT_REDIS_URL. cluster: a"
            " Redis Cluster, CACHEKIT_REDIS_URL names any node (redis://host:port). sentinel:"
            " CACHEKIT_REDIS_URL lists the Sentinels (redis://[:password@]h1:26379,h2:26379[/db])"
            " and CACHEKIT_REDIS_SENTINEL_SERVICE names the primary."
        ),
    )
    redis_sentinel_service: str | None = Field(
        default=None, description="The Sentinel service (master) name; sentinel mode only."
    )
    redis_sentinel_username: str | None = Field(
        default=None,
        description="User name for the Sentinels themselves (ACL); sentinel mode only.",
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None,
        description=(
            "Password for the Sentinels themselves (their requirepass); sentinel mode only."
            " Credentials in CACHEKIT_REDIS_URL are for the primary."
        ),
    )
    near_cache_max_bytes: int = Field(
        default=0,
        ge=0,
        description=(
            "Byte budget of a per-process near cache in front of Redis (standalone or"
            " Sentinel), kept coherent by Redis's client-side-caching invalidations; 0: off."
        ),
    )
    near_cache_max_age: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Longest a near-cache entry is served without asking Redis (a safety net).",
    )
    stats_interval: float = Field(
        default=10.0,
        ge=0,
        allow_inf_nan=False,
        description="Seconds between publishing this process's counters to Redis; 0: never.",
    )

    @field_validator("ttls", "stale_ttls", mode="before")
    @classmethod
    def _normalise_ttl_names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {handler_setting_name(str(name)): ttl for name, ttl in value.items()}
        return value

    @field_validator("compress", mode="before")
    @classmethod
    def _parse_compress(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str | list | tuple):
            return parse_codings(value)
        return value

    @field_validator("ignore_query_params", mode="before")
    @classmethod
    def _parse_ignored(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str | list | tuple):
            return parse_patterns(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        schemes = ("redis://", "rediss://", "unix://")
        if not value.startswith(schemes):
            raise ValueError(f"must start with one of {', '.join(schemes)}")
        return value

    @model_validator(mode="after")
    def _check_redis_mode(self) -> CacheSettings:
        # Errors name their variable themselves: they concern a combination of settings.
        mode = self.redis_mode
        if mode == "standalone":
            return self
        if self.redis_url is None:
            raise ValueError(f"{ENV_PREFIX}REDIS_URL: required when {ENV_PREFIX}REDIS_MODE={mode}")
        if mode == "cluster":
            if self.near_cache_max_bytes:
                # Tracking is per server: it would need one listener per node, kept in step
                # with slot migrations. Refused rather than silently ignored.
                raise ValueError(
                    f"{ENV_PREFIX}NEAR_CACHE_MAX_BYTES: the near cache is not supported with"
                    f" {ENV_PREFIX}REDIS_MODE=cluster; set it to 0"
                )
            if not self.redis_url.startswith(("redis://", "rediss://")):
                raise ValueError(
                    f"{ENV_PREFIX}REDIS_URL: a cluster node must be redis://host:port or rediss://"
                )
            if "," in self.redis_url:
                raise ValueError(
                    f"{ENV_PREFIX}REDIS_URL: name one cluster node; the others are discovered"
                )
            return self
        try:
            parse_sentinel_url(self.redis_url)
        except ValueError as exc:
            raise ValueError(f"{ENV_PREFIX}REDIS_URL: {exc}") from None
        if not (self.redis_sentinel_service or "").strip():
            raise ValueError(
                f"{ENV_PREFIX}REDIS_SENTINEL_SERVICE: required when {ENV_PREFIX}REDIS_MODE=sentinel"
            )
        return self

    def ttl_override(self, handler_name: str) -> float | None:
        """The operator's TTL for this handler, if one is configured."""
        return self.ttls.get(handler_setting_name(handler_name))

    def stale_ttl_override(self, handler_name: str) -> float | None:
        """The operator's stale-while-revalidate window for this handler, if configured."""
        return self.stale_ttls.get(handler_setting_name(handler_name))


def load_settings(**overrides: Any) -> CacheSettings:
    """Read `CacheSettings` from the environment, turning any error into a `SettingsError`.

    The message names the environment variable (e.g. `CACHEKIT_DEFAULT_TTL`) and the problem,
    so a misconfigured worker stops at startup with a line an operator can act on.
    """
    try:
        return CacheSettings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe_validation_error(exc)) from None
    except PydanticSettingsError as exc:
        raise SettingsError(_describe_source_error(exc)) from None


def _describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        location = [str(part) for part in error["loc"]]
        if not location:  # a check across settings; its message names the variables
            problems.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        variable = ENV_PREFIX + location[0].upper()
        if len(location) > 1:
            # Set either as JSON in CACHEKIT_TTLS or as CACHEKIT_TTLS__NAME: name both.
            entry = "__".join(location[1:])
            variable += f'["{entry}"] ({ENV_PREFIX}{location[0].upper()}__{entry.upper()})'
        # A URL may carry a password: never echo it into logs.
        shown = "" if "url" in location[0].lower() else f" (got {error.get('input')!r})"
        problems.append(f"{variable}: {error['msg']}{shown}")
    return "invalid cache settings: " + "; ".join(problems)


def _describe_source_error(exc: PydanticSettingsError) -> str:
    # pydantic-settings says: error parsing value for field "ttls" from source "EnvSettingsSource"
    match = re.search(r'field "([^"]+)"', str(exc))
    field = match.group(1) if match else "?"
    return f"invalid cache settings: {ENV_PREFIX}{field.upper()}: not valid JSON ({exc})"
