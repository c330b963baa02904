"""The keyed pseudonym that stands for a vehicle id everywhere past the sink's intake.

``mask_vehicle(key, vehicle_id)`` is the first 16 lowercase hex digits (64 bits)
of HMAC-SHA256 keyed with ``key`` over the UTF-8 bytes of the vehicle id exactly
as it appears in the packet's ``vid`` (no normalisation). The lake, the latest
state, alerts and views hold only this value; the raw id stays in the
operational tables, joined through the same function. 64 bits keep the
chance of two vehicles of a 10-million fleet colliding below 3e-6 while
fitting a partition folder name.
"""
from __future__ import annotations

import hashlib
import hmac

MASK_HEX_DIGITS = 16


def mask_vehicle(key: bytes, vehicle_id: str) -> str:
    """A stable pseudonym for a vehicle id (HMAC-SHA256 truncated to 16 hex digits)."""
    return hmac.new(key, vehicle_id.encode(), hashlib.sha256).hexdigest()[:MASK_HEX_DIGITS]


def lake_bucket(masked: str, buckets: int) -> str:
    """The ``vehicle_bucket=`` value of a masked id in the lake's bucket layout: its first 8 hex
    digits as an integer mod ``buckets``, in lowercase hex zero-padded to the width of ``buckets - 1``."""
    width = len(f"{buckets - 1:x}")
    return f"{int(masked[:8], 16) % buckets:0{width}x}"
