"""The lake table builder, a pure core: physical values for every kind of column conversion,
compared with ``Column.physical`` (which mirrors cantools), from decoded and from validated
packets; nulls, dropped empty rows, out-of-range flags and latest values."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from cloud_sink.table import TableBuilder
from minute_packet import MinutePacket, encode
from minute_packet.codec import validate
from minute_packet.schema import Column, Schema

T0 = 1_767_225_600


def _col(name, kind, scale=1, offset=0, aggregate="last", minimum=None, maximum=None):
    return Column(name=name, message="M", frame_id=1, signal=name, aggregate=aggregate, kind=kind, scale=scale,
                  offset=offset, minimum=minimum, maximum=maximum, layout=f"0|16|little_endian|{int(kind == 'int')}|0|")


COLUMNS = (
    _col("u_plain", "uint"),
    _col("u_int_scaled", "uint", scale=2, offset=-40, minimum=-40, maximum=400),
    _col("u_int_offset", "uint", offset=-40),
    _col("u_float_scaled", "uint", scale=0.01, minimum=0, maximum=5),
    _col("u_float_offset_only", "uint", offset=0.5),
    _col("u_mean", "uint", aggregate="mean"),
    _col("i_plain", "int", minimum=-100, maximum=100),
    _col("i_float_scaled", "int", scale=0.1, offset=-3.5),
    _col("i_int_scaled", "int", scale=3),
    _col("f32_plain", "f32"),
    _col("f32_scaled", "f32", scale=0.5, offset=1),
    _col("f64_plain", "f64"),
    _col("f64_offset", "f64", offset=-2.25),
)


def _raw(rng, col: Column, rows: int) -> np.ndarray:
    if col.kind == "uint":
        return rng.integers(0, 1000, rows).astype(np.uint64)
    if col.kind == "int":
        return rng.integers(-500, 500, rows).astype(np.int64).view(np.uint64)
    if col.kind == "f32":
        return rng.normal(0, 100, rows).astype(np.float32).view(np.uint32).astype(np.uint64)
    return rng.normal(0, 100, rows).view(np.uint64)


def _packets(schema: Schema, rng) -> list[MinutePacket]:
    out = []
    for vehicle in ("A", "B"):
        for seq in range(3):
            values = np.stack([_raw(rng, c, 60) for c in schema.columns])
            present = rng.random((len(schema.columns), 60)) < 0.8
            present[:, 7] = False  # a second without any value: not a row
            out.append(MinutePacket(vehicle_id=vehicle, model="m", boot_id=bytes(16), seq=seq,
                                    start_time=T0 + 60 * seq, fingerprint=schema.fingerprint,
                                    values=values, present=present))
    return out


def test_physical_values_nulls_flags_and_latest_match_the_reference_conversion():
    schema = Schema(COLUMNS, {})
    builder = TableBuilder(schema)
    packets = _packets(schema, np.random.default_rng(5))
    masked = [p.vehicle_id for p in packets]
    for source in (packets, [validate(encode(p)) for p in packets]):
        built = builder.build(source, masked, vehicle_column=True)
        table = built.table
        keep = np.concatenate([p.present.any(axis=0) for p in packets])
        assert table.num_rows == int(keep.sum()) == 6 * 59
        for c, col in enumerate(COLUMNS):
            present = np.concatenate([p.present[c] for p in packets])[keep]
            expected = np.concatenate([col.physical(p.values[c]) for p in packets])[keep]
            got = table.column(col.name)
            assert got.type == (pa.int64() if col.integer_valued else pa.float64()), col.name
            assert got.is_valid().to_numpy(zero_copy_only=False).tolist() == present.tolist(), col.name
            values = got.to_numpy(zero_copy_only=False)
            np.testing.assert_array_equal(values[present], expected[present], err_msg=col.name)
            flagged = [col.name in flags for flags in table.column("out_of_range").to_pylist()]
            low = -np.inf if col.minimum is None else col.minimum
            high = np.inf if col.maximum is None else col.maximum
            outside = present & ((expected < low) | (expected > high))
            assert flagged == outside.tolist(), col.name
            assert built.out_of_range[c] == outside.sum()
            # latest: the vehicle's last present value and its second
            for vehicle in ("A", "B"):
                rows = [i for i, v in enumerate(table.column("vehicle").to_pylist()) if v == vehicle and present[i]]
                ts = table.column("ts").cast(pa.int64()).to_pylist()
                last = rows[-1]
                if np.isfinite(expected[last]):
                    assert built.latest[vehicle][col.name] == (ts[last], expected[last].item()), col.name
