"""CacheSettings from CACHEKIT_* environment variables; errors name the variable."""

from __future__ import annotations

import math
import os
import re

import pytest
from aiohttp import web

from cachekit import setup_cache
from cachekit.entry import CachedResponse, CorruptEntry
from cachekit.entry_format import decode, encode
from cachekit.settings import (
    CacheSettings,
    SettingsError,
    handler_setting_name,
    load_settings,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No CACHEKIT_* variable of the surrounding shell leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("CACHEKIT_"):
            monkeypatch.delenv(name)
    return monkeypatch


def settings_error(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> str:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return str(caught.value)


# ------------------------------------------------------------------ defaults and values


def test_defaults() -> None:
    settings = load_settings()
    assert settings.redis_url is None
    assert settings.namespace == "cachekit"
    assert settings.enabled is True
    assert settings.default_ttl == 60.0
    assert settings.ttls == {}
    assert settings.max_key_length == 250
    assert settings.ttl_override("anything") is None


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError):
        settings.default_ttl = 5.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("CACHEKIT_DEFAULT_TTL", "30", "default_ttl", 30.0),
        ("CACHEKIT_DEFAULT_TTL", "0", "default_ttl", 0.0),
        ("CACHEKIT_DEFAULT_TTL", " 2.5 ", "default_ttl", 2.5),
        ("cachekit_default_ttl", "7", "default_ttl", 7.0),
        ("CACHEKIT_NAMESPACE", "shop-1.prod_a", "namespace", "shop-1.prod_a"),
        ("CACHEKIT_MAX_ENTRY_BYTES", "1024", "max_entry_bytes", 1024),
        ("CACHEKIT_MEMORY_MAX_BYTES", "2048", "memory_max_bytes", 2048),
        ("CACHEKIT_REDIS_TIMEOUT", "1.5", "redis_timeout", 1.5),
        ("CACHEKIT_FAILURE_THRESHOLD", "5", "failure_threshold", 5),
        ("CACHEKIT_FAILURE_COOLDOWN", "0.5", "failure_cooldown", 0.5),
        ("CACHEKIT_MAX_KEY_LENGTH", "128", "max_key_length", 128),
        ("CACHEKIT_REDIS_URL", "redis://localhost:6379/0", "redis_url", "redis://localhost:6379/0"),
        ("CACHEKIT_REDIS_URL", "rediss://h:6380", "redis_url", "rediss://h:6380"),
        ("CACHEKIT_REDIS_URL", "unix:///run/redis.sock", "redis_url", "unix:///run/redis.sock"),
    ],
)
def test_values_from_the_environment(
    clean_environment: pytest.MonkeyPatch, name: str, value: str, field: str, expected: object
) -> None:
    clean_environment.setenv(name, value)
    assert getattr(load_settings(), field) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("false", False),
        ("FALSE", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("true", True),
        ("1", True),
        ("yes", True),
        ("on", True),
    ],
)
def test_enabled(clean_environment: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    clean_environment.setenv("CACHEKIT_ENABLED", value)
    assert load_settings().enabled is expected


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_redis_url_means_the_memory_store(
    clean_environment: pytest.MonkeyPatch, value: str
) -> None:
    clean_environment.setenv("CACHEKIT_REDIS_URL", value)
    assert load_settings().redis_url is None


def test_overrides_beat_the_environment(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("CACHEKIT_DEFAULT_TTL", "30")
    assert load_settings(default_ttl=5).default_ttl == 5.0


# ------------------------------------------------------------------ per-handler TTLs


class TestTtls:
    def test_nested_variable(self, clean_environment: pytest.MonkeyPatch) -> None:
        clean_environment.setenv("CACHEKIT_TTLS__GET_PRODUCT", "120")
        assert load_settings().ttl_override("get_product") == 120

    def test_json_variable(self, clean_environment: pytest.MonkeyPatch) -> None:
        clean_environment.setenv("CACHEKIT_TTLS", '{"get_product": 120}')
        assert load_settings().ttl_override("get_product") == 120

    def test_json_names_are_normalised(self, clean_environment: pytest.MonkeyPatch) -> None:
        clean_environment.setenv("CACHEKIT_TTLS", '{"ProductView.get": 10, "Get-Product": 0}')
        settings = load_settings()
        assert settings.ttl_override("ProductView.get") == 10
        assert settings.ttl_override("productview_get") == 10
        assert settings.ttl_override("get_product") == 0  # zero is an override, not absence

    def test_view_method_via_nested_variable(self, clean_environment: pytest.MonkeyPatch) -> None:
        clean_environment.setenv("CACHEKIT_TTLS__PRODUCTVIEW_GET", "5")
        assert load_settings().ttl_override("ProductView.get") == 5

    def test_json_and_nested_variables_combine(self, clean_environment: pytest.MonkeyPatch) -> None:
        clean_environment.setenv("CACHEKIT_TTLS", '{"a": 1}')
        clean_environment.setenv("CACHEKIT_TTLS__B", "2")
        settings = load_settings()
        assert (settings.ttl_override("a"), settings.ttl_override("b")) == (1, 2)

    def test_unconfigured_handler(self, clean_environment: pytest.MonkeyPatch) -> None:
        clean_environment.setenv("CACHEKIT_TTLS__GET_PRODUCT", "120")
        assert load_settings().ttl_override("list_products") is None

    def test_stale_ttls(self, clean_environment: pytest.MonkeyPatch) -> None:
        clean_environment.setenv("CACHEKIT_STALE_TTLS__GET_PRODUCT", "30")
        clean_environment.setenv("CACHEKIT_STALE_TTL", "5")
        settings = load_settings()
        assert settings.stale_ttl_override("get-product") == 30
        assert settings.stale_ttl_override("other") is None
        assert settings.stale_ttl == 5

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("get_product", "get_product"),
            ("GetProduct", "getproduct"),
            ("ProductView.get", "productview_get"),
            ("get-product", "get_product"),
            ("  Get  Product!! ", "get_product"),
            ("__x__", "x"),
        ],
    )
    def test_handler_setting_name(self, name: str, expected: str) -> None:
        assert handler_setting_name(name) == expected


# ------------------------------------------------------------------ invalid values


class TestErrors:
    def test_non_numeric_ttl_names_the_variable(
        self, clean_environment: pytest.MonkeyPatch
    ) -> None:
        message = settings_error(clean_environment, "CACHEKIT_DEFAULT_TTL", "abc")
        assert "CACHEKIT_DEFAULT_TTL" in message
        assert "abc" in message

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("CACHEKIT_DEFAULT_TTL", "-1"),
            ("CACHEKIT_DEFAULT_TTL", "nan"),
            ("CACHEKIT_STALE_TTL", "-0.5"),
            ("CACHEKIT_STALE_IF_ERROR", "-3"),
            ("CACHEKIT_TTLS__GET_PRODUCT", "-5"),
            ("CACHEKIT_TTLS__GET_PRODUCT", "soon"),
            ("CACHEKIT_STALE_TTLS__GET_PRODUCT", "-1"),
            ("CACHEKIT_MAX_ENTRY_BYTES", "0"),
            ("CACHEKIT_MEMORY_MAX_BYTES", "1.5"),
            ("CACHEKIT_REDIS_TIMEOUT", "0"),
            ("CACHEKIT_REDIS_TIMEOUT", "61"),
            ("CACHEKIT_FAILURE_THRESHOLD", "0"),
            ("CACHEKIT_FAILURE_COOLDOWN", "0"),
            ("CACHEKIT_LOCK_TIMEOUT", "0"),
            ("CACHEKIT_LOCK_TTL", "-1"),
            ("CACHEKIT_MAX_KEY_LENGTH", "63"),
            ("CACHEKIT_MAX_KEY_LENGTH", "4097"),
            ("CACHEKIT_MAX_VARIANTS", "0"),
            ("CACHEKIT_ENABLED", "maybe"),
            ("CACHEKIT_ENABLED", ""),
            ("CACHEKIT_NAMESPACE", "a:b"),
            ("CACHEKIT_NAMESPACE", ""),
            ("CACHEKIT_NAMESPACE", "x" * 65),
            ("CACHEKIT_NAMESPACE", "a b"),
            ("CACHEKIT_NAMESPACE", "a{b}"),
        ],
    )
    def test_invalid_value_names_the_variable(
        self, clean_environment: pytest.MonkeyPatch, name: str, value: str
    ) -> None:
        message = settings_error(clean_environment, name, value)
        assert message.startswith("invalid cache settings: ")
        assert re.search(rf"\b{name}\b", message), message

    def test_namespace_with_colon(self, clean_environment: pytest.MonkeyPatch) -> None:
        message = settings_error(clean_environment, "CACHEKIT_NAMESPACE", "shop:prod")
        assert "CACHEKIT_NAMESPACE" in message

    @pytest.mark.parametrize("name", ["CACHEKIT_TTLS", "CACHEKIT_STALE_TTLS"])
    @pytest.mark.parametrize("value", ["{bad", "", "get_product=120", "{'a': 1}"])
    def test_invalid_json_names_the_variable(
        self, clean_environment: pytest.MonkeyPatch, name: str, value: str
    ) -> None:
        message = settings_error(clean_environment, name, value)
        assert re.search(rf"\b{name}\b", message), message
        assert "JSON" in message

    @pytest.mark.parametrize("value", ["[1, 2]", "120", '"x"'])
    def test_json_of_the_wrong_shape_names_the_variable(
        self, clean_environment: pytest.MonkeyPatch, value: str
    ) -> None:
        message = settings_error(clean_environment, "CACHEKIT_TTLS", value)
        assert re.search(r"\bCACHEKIT_TTLS\b", message), message

    def test_negative_ttl_in_json_mentions_the_variable_and_handler(
        self, clean_environment: pytest.MonkeyPatch
    ) -> None:
        message = settings_error(clean_environment, "CACHEKIT_TTLS", '{"get_product": -1}')
        assert "CACHEKIT_TTLS" in message
        assert "GET_PRODUCT" in message.upper()

    def test_bad_json_entry_names_the_variable_that_was_set(
        self, clean_environment: pytest.MonkeyPatch
    ) -> None:
        message = settings_error(clean_environment, "CACHEKIT_TTLS", '{"get_product": -1}')
        assert re.search(r"\bCACHEKIT_TTLS\b(?!__)", message), message

    @pytest.mark.parametrize(
        "url", ["http://localhost:6379", "localhost:6379", "REDIS://h", " redis://h", "redis:/h"]
    )
    def test_redis_url_scheme_is_checked(
        self, clean_environment: pytest.MonkeyPatch, url: str
    ) -> None:
        message = settings_error(clean_environment, "CACHEKIT_REDIS_URL", url)
        assert "CACHEKIT_REDIS_URL" in message
        assert "redis://" in message

    def test_redis_url_password_is_not_echoed(self, clean_environment: pytest.MonkeyPatch) -> None:
        message = settings_error(clean_environment, "CACHEKIT_REDIS_URL", "http://u:s3cret@h:1")
        assert "CACHEKIT_REDIS_URL" in message
        assert "s3cret" not in message

    def test_every_problem_is_reported(self, clean_environment: pytest.MonkeyPatch) -> None:
        clean_environment.setenv("CACHEKIT_DEFAULT_TTL", "-1")
        clean_environment.setenv("CACHEKIT_NAMESPACE", "a:b")
        with pytest.raises(SettingsError) as caught:
            load_settings()
        assert "CACHEKIT_DEFAULT_TTL" in str(caught.value)
        assert "CACHEKIT_NAMESPACE" in str(caught.value)

    def test_overrides_are_validated_too(self) -> None:
        with pytest.raises(SettingsError, match="CACHEKIT_DEFAULT_TTL"):
            load_settings(default_ttl=-1)

    def test_direct_construction_raises_pydantic_errors(self) -> None:
        # load_settings is the friendly entry point; the model itself stays strict.
        with pytest.raises(ValueError):
            CacheSettings(default_ttl=-1)

    @pytest.mark.parametrize(
        "name",
        [
            "CACHEKIT_DEFAULT_TTL",
            "CACHEKIT_TTLS__GET_PRODUCT",
            "CACHEKIT_STALE_TTL",
            "CACHEKIT_STALE_IF_ERROR",
            "CACHEKIT_FAILURE_COOLDOWN",
            "CACHEKIT_LOCK_TIMEOUT",
            "CACHEKIT_LOCK_TTL",
        ],
    )
    @pytest.mark.parametrize("value", ["inf", "1e400"])
    def test_infinite_durations_are_rejected(
        self, clean_environment: pytest.MonkeyPatch, name: str, value: str
    ) -> None:
        clean_environment.setenv(name, value)
        with pytest.raises(SettingsError, match=name):
            load_settings()


def test_infinite_ttl_really_produces_undecodable_entries() -> None:
    """Why an infinite TTL setting matters: the entry format refuses it."""
    data = encode(CachedResponse(200, (), b"", 0.0, math.inf))
    with pytest.raises(CorruptEntry, match="invalid timing"):
        decode(data)


# ------------------------------------------------------------------ the environment at startup


def test_invalid_environment_stops_startup_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHEKIT_DEFAULT_TTL", "soon")
    with pytest.raises(SettingsError, match="CACHEKIT_DEFAULT_TTL"):
        setup_cache(web.Application())
    monkeypatch.delenv("CACHEKIT_DEFAULT_TTL")
    monkeypatch.setenv("CACHEKIT_TTLS", "{not json")
    with pytest.raises(SettingsError, match="CACHEKIT_TTLS"):
        setup_cache(web.Application())
    monkeypatch.setenv("CACHEKIT_TTLS", '{"get_product": 5}')
    monkeypatch.setenv("CACHEKIT_REDIS_URL", "http://user:hunter2@example")
    with pytest.raises(SettingsError, match="CACHEKIT_REDIS_URL") as raised:
        setup_cache(web.Application())
    assert "hunter2" not in str(raised.value)


def test_environment_configures_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEKIT_TTLS__GET_PRODUCT", "120")
    monkeypatch.setenv("CACHEKIT_NAMESPACE", "shop")
    cache = setup_cache(web.Application())
    assert cache.settings.ttl_override("get_product") == 120
    assert cache.settings.namespace == "shop"
    assert cache.stats()["store"] == "memory"
