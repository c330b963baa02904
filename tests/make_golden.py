"""Regenerate tests/data/golden/ (run only when the format version changes): python tests/make_golden.py"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from minute_packet import MinutePacket, encode

OUT = Path(__file__).parent / "data" / "golden"


def cases() -> dict[str, MinutePacket]:
    header = dict(vehicle_id="WDD2040011A000001", model="reference-car", boot_id=bytes.fromhex("00112233445566778899aabbccddeeff"),
                  fingerprint=bytes.fromhex("0123456789abcdef"))
    small = np.array([[100, 101, 103], [5, 5, 5], [2**64 - 3, 2**64 - 1, 1]], dtype=np.uint64)
    minute = np.stack([np.arange(60, dtype=np.uint64) * 250 + 8000, np.full(60, 2, np.uint64),
                       (np.arange(60) % 7).astype(np.uint64), np.zeros(60, np.uint64)])
    present = np.ones_like(minute, dtype=bool)
    present[2, ::5] = False
    present[3] = False
    return {
        "v1-three-rows": MinutePacket(seq=0, start_time=1_767_225_600, values=small, present=np.ones_like(small, bool), **header),
        "v1-minute-with-missing": MinutePacket(seq=41, start_time=1_767_225_660, values=minute, present=present, **header),
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, p in cases().items():
        (OUT / f"{name}.bin").write_bytes(encode(p))
        doc = {"vehicle_id": p.vehicle_id, "model": p.model, "boot_id": p.boot_id.hex(), "seq": p.seq,
               "start_time": p.start_time, "fingerprint": p.fingerprint.hex(), "clock": p.clock,
               "columns": [[int(v) if ok else None for v, ok in zip(vals, pres)] for vals, pres in zip(p.values, p.present)]}
        (OUT / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
