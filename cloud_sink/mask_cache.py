"""Masked vehicle ids (keyed HMAC, :func:`minute_packet.masking.mask_vehicle`), cached."""
from __future__ import annotations

from minute_packet.masking import mask_vehicle


class MaskCache:
    """``mask(vehicle_id)`` with a bounded cache (cleared when ``capacity`` ids are held)."""

    def __init__(self, secret: bytes, capacity: int = 100_000) -> None:
        self._secret = secret
        self._capacity = capacity
        self._masks: dict[str, str] = {}

    def __call__(self, vehicle_id: str) -> str:
        masked = self._masks.get(vehicle_id)
        if masked is None:
            if len(self._masks) >= self._capacity:
                self._masks.clear()
            masked = self._masks[vehicle_id] = mask_vehicle(self._secret, vehicle_id)
        return masked
