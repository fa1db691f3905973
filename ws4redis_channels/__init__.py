"""Websockets for Django, fed by Redis, on Django Channels."""

__version__ = "0.1.0.dev0"
