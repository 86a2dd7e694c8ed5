"""What one cache resolved for one handler: its settings, and the Vary it learned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cachekit import policy
from cachekit.settings import CacheSettings

if TYPE_CHECKING:
    from cachekit.handler_spec import HandlerSpec


@dataclass(slots=True)
class HandlerState:
    """What one cache resolved for one handler, once: the settings that apply to it, and
    the request headers its responses were seen to vary on (`vary`, declared ones first)."""

    declared_vary: tuple[str, ...]
    vary: tuple[str, ...]
    emit_cache_control: bool
    honor_request_cache_control: bool
    configured: policy.Configured


def resolve_handler(settings: CacheSettings, spec: HandlerSpec) -> HandlerState:
    """What the settings and the decorator make of one handler, before any Vary is learned."""
    emit, honor = spec.emit_cache_control, spec.honor_request_cache_control
    configured = policy.Configured(
        ttl_override=settings.ttl_override(spec.name),
        ttl=spec.ttl,
        default_ttl=settings.default_ttl,
        stale_ttl_override=settings.stale_ttl_override(spec.name),
        stale_ttl=spec.stale_ttl,
        default_stale_ttl=settings.stale_ttl,
        stale_if_error=spec.stale_if_error,
        default_stale_if_error=settings.stale_if_error,
        heuristic_max_ttl=settings.heuristic_max_ttl if settings.heuristic_freshness else None,
    )
    return HandlerState(
        declared_vary=spec.vary,
        vary=spec.vary,
        emit_cache_control=emit if emit is not None else settings.emit_cache_control,
        honor_request_cache_control=(
            honor if honor is not None else settings.honor_request_cache_control
        ),
        configured=configured,
    )
