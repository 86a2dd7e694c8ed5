"""Demo aiohttp service that puts cachekit in front of a deliberately slow catalogue."""

from demo_app.app import create_app

__all__ = ["create_app"]
