"""Fault injection with published figures: ``make chaos`` (see ``__main__.py``)."""
