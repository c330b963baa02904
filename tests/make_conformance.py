"""Regenerate docs/conformance/ (packets, their schema, expected rows, malformed cases).

    python tests/make_conformance.py

The expected physical values are computed here by a small pure-Python reference decoder
written from docs/packet-format.md (no numpy, no project decoder), so the vectors check the
project's codec and sink against the spec rather than against themselves. Run it only when the
format changes; tests/test_conformance.py checks the files against both implementations.
"""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import msgpack
import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dbc  # noqa: E402
from minute_packet import Collection, MinutePacket, Schema, encode, schema_from_dbc  # noqa: E402
from minute_packet import codec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent / "docs" / "conformance"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
BOOT = bytes.fromhex("00112233445566778899aabbccddeeff")
U64 = (1 << 64) - 1


def conformance_schema(version: int = 2) -> Schema:
    db = dbc.load(ROOT / "conformance.dbc")
    collection = Collection(aggregates={"Margin": ("last", "min", "max", "mean")})
    return schema_from_dbc(db, collection, source="conformance.dbc", version=version)


# -- reference decoder (the spec, in plain Python) -------------------------------------------------

def ref_cells(wire: bytes, ncol: int) -> tuple[dict, list[list[int | None]]]:
    """Header and raw cells (column-major, None = missing) of a packet, per docs/packet-format.md."""
    body = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(wire[4:]), raw=False)
    n, widths = body["n"], list(body["w"])
    assert len(widths) == ncol
    mask = body["mask"]

    def present(c: int, i: int) -> bool:
        if not mask:
            return True
        bit = c * n + i
        return bool(mask[bit // 8] >> (7 - bit % 8) & 1)

    blocks = {}
    for w in (1, 2, 4, 8):
        blob = body.get(f"d{w}", b"")
        k = widths.count(w)
        per = k * (n - 1)
        # un-shuffle: byte j of delta t is blob[j * per + t]
        blocks[w] = [int.from_bytes(bytes(blob[j * per + t] for j in range(w)), "little") for t in range(per)]
    seen = {1: 0, 2: 0, 4: 0, 8: 0}
    cells = []
    for c, w in enumerate(widths):
        z = body["first"][c]
        v = (z >> 1) ^ -(z & 1)
        values = [v & U64]
        if w in (1, 2, 4, 8):
            start = seen[w] * (n - 1)
            seen[w] += 1
            for t in range(n - 1):
                dz = blocks[w][start + t]
                d = (dz >> 1) ^ -(dz & 1)
                values.append((values[-1] + d) & U64)
        else:
            values += [values[0]] * (n - 1)
        cells.append([values[i] if w != 255 and present(c, i) else None for i in range(n)])
    return body, cells


def ref_value_type(col: dict) -> str:
    integer = (col["kind"] in ("int", "uint") and col["aggregate"] != "mean"
               and float(col["scale"]).is_integer() and float(col["offset"]).is_integer())
    if not integer:
        return "float64"
    n = col["bits"]["length"]
    lo, hi = (-(1 << (n - 1)), (1 << (n - 1)) - 1) if col["kind"] == "int" else (0, (1 << n) - 1)
    a, b = sorted((lo * int(col["scale"]) + int(col["offset"]), hi * int(col["scale"]) + int(col["offset"])))
    if -(1 << 63) <= a and b < 1 << 63:
        return "int64"
    if 0 <= a and b <= U64:
        return "uint64"
    return "float64"


def ref_physical(col: dict, raw: int) -> int | float:
    kind = col["kind"]
    if kind == "int":
        number: int | float = raw - (1 << 64) if raw >> 63 else raw
    elif kind == "uint":
        number = raw
    elif kind == "f32":
        number = struct.unpack("<f", struct.pack("<I", raw & 0xFFFFFFFF))[0]
    else:
        number = struct.unpack("<d", struct.pack("<Q", raw))[0]
    if ref_value_type(col) != "float64":
        return number * int(col["scale"]) + int(col["offset"])
    v = float(number)
    if col["scale"] != 1:
        v = v * col["scale"]
    if col["offset"] != 0:
        v = v + col["offset"]
    return v


def ref_rows(wire: bytes, schema_json: dict) -> list[dict]:
    cols = schema_json["columns"]
    body, cells = ref_cells(wire, len(cols))
    rows = []
    for i in range(body["n"]):
        row: dict = {"ts": body["t0"] + i}
        flagged = []
        for col, column_cells in zip(cols, cells):
            raw = column_cells[i]
            value = None if raw is None else ref_physical(col, raw)
            row[col["name"]] = value
            if value is not None and ((col["minimum"] is not None and float(value) < col["minimum"])
                                      or (col["maximum"] is not None and float(value) > col["maximum"])):
                flagged.append(col["name"])
        row["out_of_range"] = flagged
        rows.append(row)
    return rows


# -- the vectors -----------------------------------------------------------------------------------

def _bits(col_kind: str, value: float | int) -> int:
    if col_kind == "f32":
        return struct.unpack("<I", struct.pack("<f", value))[0]
    if col_kind == "f64":
        return struct.unpack("<Q", struct.pack("<d", value))[0]
    return int(value) & U64


def packets(schema: Schema, only: str | None = None) -> dict[str, MinutePacket]:
    names = [c.name for c in schema.columns]
    ncol = len(names)

    def build(n: int, columns: dict[str, list], *, seq: int, t0: int = T0, **kw) -> MinutePacket:
        values = np.zeros((ncol, n), dtype=np.uint64)
        present = np.zeros((ncol, n), dtype=bool)
        for name, cells in columns.items():
            c = names.index(name)
            kind = schema.columns[c].kind
            for i, v in enumerate(cells):
                if v is not None:
                    values[c, i] = _bits(kind, v)
                    present[c, i] = True
        return MinutePacket(vehicle_id="CONF0001", model="conformance", boot_id=BOOT, seq=seq, start_time=t0,
                            fingerprint=schema.fingerprint, values=values, present=present, **kw)

    n = 60
    ramp = list(range(n))
    cases = {
        # every delta width: constant (0), 1, 2, 4 and 8 bytes, and an all-missing column (255)
        "widths": lambda: build(n, {
            "Mode": [3] * n,                                                  # width 0
            "Temp": [-40 + (i % 100) for i in ramp],                          # width 1, signed
            "Speed": [i * 150 for i in ramp],                                 # width 2 (raw 0..8850)
            "PageB": [None if i % 2 else (-1) ** i * i * 1_000_000 for i in ramp],  # width 4, signed, gaps
            "Big": [(-1) ** i * (1 << 62) + i for i in ramp],                 # width 8, signed 64-bit
            "VinPart": [(1 << 63) + i * (1 << 40) for i in ramp],             # width 8, uint64 >= 2^63
            # NeverSent: all missing (width code 255)
        }, seq=0),
        # IEEE floats (f32 in the low 32 bits, f64), a multiplexed message, an extended id beside a
        # standard one with the same number, a name the lake reserves (seq -> Body.seq)
        "floats-mux-extended": lambda: build(n, {
            "Ratio": [None if i == 7 else (i - 30) / 8 for i in ramp],         # exactly representable
            "Precise": [1e-300 * (i + 1) if i % 3 else -(2.0 ** 60) / (i + 1) for i in ramp],
            "Page": [i % 2 for i in ramp],
            "PageA": [i * 10 if i % 2 == 0 else None for i in ramp],         # sent with Page = 0
            "PageB": [None if i % 2 == 0 else -i * 7 for i in ramp],          # sent with Page = 1
            "Counter": [i % 256 for i in ramp],                               # 29-bit 0x100
            "Speed": [1000] * n,                                              # 11-bit 0x100
            "Body.seq": [i for i in ramp],
        }, seq=1, t0=T0 + 60, clock_synced=True),
        # aggregates under a negative scale: min holds the raw maximum (physical minimum)
        "aggregates-negative-scale": lambda: build(4, {
            "Margin": [10, 20, 30, 250],
            "Margin__min": [12, 25, 35, 250],     # physical 94, 87.5, 82.5, -25 (out of range)
            "Margin__max": [8, 15, 30, 200],      # physical 96, 92.5, 85, 0
            "Margin__mean": [10.5, 20.25, 32.0, 225.0],
        }, seq=2, t0=T0 + 125, clock_correction_ms=-1500),
        # one row, rows with no value at all (the lake does not store those), out-of-range values
        "one-row": lambda: build(1, {"Temp": [127], "Mode": [7], "VinPart": [U64]}, seq=3, t0=T0 + 180),
        "empty-rows": lambda: build(5, {"Speed": [None, 400, None, None, 0]}, seq=4, t0=T0 + 240),
    }
    return {name: make() for name, make in cases.items() if only in (None, name)}


def _wire(body: object, version: int = 2, checksum: bool = True, size: bool = True) -> bytes:
    raw = msgpack.packb(body, use_bin_type=True)
    frame = zstandard.ZstdCompressor(write_checksum=checksum, write_content_size=size).compress(raw)
    return b"MP" + bytes((version, 0)) + frame


def malformed(good: bytes) -> list[tuple[str, bytes, str, str]]:
    """(name, bytes, reason, what is wrong) for every reject rule of the codec."""
    body = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(good[4:]), raw=False)

    def with_(**changes) -> bytes:
        b = dict(body)
        for k, v in changes.items():
            if v is None:
                b.pop(k)
            else:
                b[k] = v
        return _wire(b)

    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x10
    ncol, n = len(body["w"]), body["n"]
    return [
        ("empty", b"", "bad_magic", "fewer than 4 bytes"),
        ("bad-magic", b"XX" + good[2:], "bad_magic", "does not start with MP"),
        ("version-3", good[:2] + b"\x03" + good[3:], "unsupported_version", "format version 3"),
        ("not-zstd", good[:4] + b"not a zstd frame", "corrupt_compression", "no zstd frame after the header"),
        ("no-checksum", _wire(body, checksum=False), "corrupt_compression", "version 2 frame without its checksum"),
        ("no-content-size", _wire(body, size=False), "corrupt_compression", "frame header without content size"),
        ("bit-flip", bytes(flipped), "corrupt_compression", "one bit flipped: checksum or frame mismatch"),
        ("too-large-body", _wire(b"\x00" * (codec.MAX_BODY_BYTES + 1)), "too_large", "announces more than 16 MiB"),
        ("not-a-map", _wire([1, 2, 3]), "malformed", "the body is not a map"),
        ("bad-msgpack", b"MP\x02\x00" + zstandard.ZstdCompressor(write_checksum=True).compress(b"\xc1"), "malformed",
         "the body is not msgpack"),
        ("missing-vid", with_(vid=None), "malformed", "required key vid missing"),
        ("vid-not-str", with_(vid=b"CONF0001"), "malformed", "vid is bin, not str"),
        ("zero-rows", with_(n=0), "malformed", "n = 0"),
        ("too-many-rows", with_(n=3601), "malformed", "n = 3601"),
        ("mask-length", with_(mask=b"\xff"), "malformed", "presence mask not ceil(C*n/8) bytes"),
        ("delta-length", with_(d8=body["d8"][:-1]), "malformed", "delta block d8 one byte short"),
        ("width-code", with_(w=bytes([3]) + body["w"][1:]), "malformed", "width code 3"),
        ("first-count", with_(first=body["first"][:-1]), "malformed", "first has C-1 entries"),
        ("missing-present", with_(mask=bytes([0xFF]) * ((ncol * n + 7) // 8)), "malformed",
         "an all-missing (255) column has present bits"),
        ("boot-length", with_(boot=bytes(15)), "malformed", "boot id of 15 bytes"),
        ("seq-too-large", with_(seq=1 << 63), "malformed", "seq beyond a signed 64-bit integer"),
        ("year-10000", with_(t0=codec.END_OF_TIME - n + 1), "malformed", "last row at or after 10000-01-01"),
        ("model-empty", with_(model=""), "malformed", "model of 0 bytes"),
        ("corr-range", with_(corr=1 << 31), "malformed", "clock correction beyond ±(2^31-1) ms"),
        ("sync-not-bool", with_(sync=1), "malformed", "sync is not a boolean"),
    ]


def main() -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    schema = conformance_schema()
    schema_doc = json.loads(schema.to_json())
    (ROOT / "schema.json").write_bytes(schema.to_json())
    index: dict = {"schema": "schema.json", "fingerprint": schema.fingerprint.hex(),
                   "canonical": "schema.canonical.json", "packets": [], "malformed": []}
    (ROOT / "schema.canonical.json").write_bytes(schema.canonical())
    for name, packet in packets(schema).items():
        wire = encode(packet, level=19)
        (ROOT / f"{name}.bin").write_bytes(wire)
        body = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(wire[4:]), raw=False)
        header = {"vid": body["vid"], "model": body["model"], "boot": body["boot"].hex(), "seq": body["seq"],
                  "t0": body["t0"], "n": body["n"], "fp": body["fp"].hex(), "clk": body["clk"],
                  "sync": body.get("sync"), "corr": body.get("corr", 0)}
        expected = {"packet": f"{name}.bin", "header": header, "rows": ref_rows(wire, schema_doc)}
        (ROOT / f"{name}.expected.json").write_text(json.dumps(expected, indent=1) + "\n")
        index["packets"].append({"packet": f"{name}.bin", "expected": f"{name}.expected.json"})
    # a version-1 packet under its version-1 schema: still read
    v1 = conformance_schema(version=1)
    (ROOT / "v1" ).mkdir(exist_ok=True)
    (ROOT / "v1" / "schema.json").write_bytes(v1.to_json())
    legacy = packets(v1, only="one-row")["one-row"]
    raw = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(encode(legacy)[4:]), raw=False)
    (ROOT / "v1" / "one-row.bin").write_bytes(b"MP\x01\x00" + zstandard.ZstdCompressor().compress(
        msgpack.packb(raw, use_bin_type=True)))
    index["v1"] = {"schema": "v1/schema.json", "fingerprint": v1.fingerprint.hex(), "packet": "v1/one-row.bin"}
    good = (ROOT / "widths.bin").read_bytes()
    (ROOT / "malformed").mkdir(exist_ok=True)
    for name, data, reason, what in malformed(good):
        (ROOT / "malformed" / f"{name}.bin").write_bytes(data)
        index["malformed"].append({"packet": f"malformed/{name}.bin", "reason": reason, "what": what})
    (ROOT / "index.json").write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    main()
