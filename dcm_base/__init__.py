"""Shared plumbing at the bottom of the project: imported by every package, imports none of them.

``broker_url`` (MQTT broker URLs), ``errors`` (the project's error base),
``logutil`` (rate-limited logging) and ``backoff`` (retry delays). Nothing
here does work at import time or needs more than the standard library.
"""
