"""cachekit: per-handler HTTP response caching for aiohttp, in Redis or in memory."""

from cachekit._version import __version__
from cachekit.app import get_cache, setup_cache
from cachekit.backends.base import Store, StoreError, WriteRefused
from cachekit.cache import Cache, CacheStats
from cachekit.decorator import cached
from cachekit.entry import CachedResponse
from cachekit.purging import Purge
from cachekit.revalidation import not_modified
from cachekit.settings import CacheSettings, SettingsError, load_settings
from cachekit.tagging import tag

__all__ = [
    "Cache",
    "CacheSettings",
    "CacheStats",
    "CachedResponse",
    "Purge",
    "SettingsError",
    "Store",
    "StoreError",
    "WriteRefused",
    "__version__",
    "cached",
    "get_cache",
    "load_settings",
    "not_modified",
    "setup_cache",
    "tag",
]
