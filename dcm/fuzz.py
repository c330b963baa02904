"""Hostile-input fuzzing (hypothesis) of everything that parses outside data: the packet codec,
schema JSON, the sink's validator (topic + payload), rule and batch configs, the gateway and sink
config files, DBC loading. A *crash* is any exception other than the target's typed errors.

``campaign(name, examples)`` runs one target and returns the cases run and the crashes found; the
tests run a bounded sample of each, ``dcm bench faults`` at least 100,000 cases in all.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dbc
from dcm_base.errors import DcmError

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Crash:
    target: str
    error: str
    where: str
    sample: str


@dataclasses.dataclass
class Campaign:
    target: str
    cases: int = 0
    crashes: list[Crash] = dataclasses.field(default_factory=list)


_cache: dict[str, Any] = {}


def _reference() -> dict[str, Any]:
    """A valid packet, its schema and config texts to mutate (built once)."""
    if not _cache:
        import numpy as np

        from minute_packet import MinutePacket, encode, schema_from_dbc

        from minute_packet import Schema

        full = schema_from_dbc(dbc.load(dbc.REFERENCE_DBC))
        # a few columns of every kind keep each case cheap (the parsers' paths are the same)
        picked = {c.kind: c.name for c in full.columns} | {c.aggregate: c.name for c in full.columns}
        columns = tuple(c for c in full.columns if c.name in set(picked.values()))
        schema = Schema(columns=columns, collection=full.collection, source="fuzz")
        n = len(schema.columns)
        rng = np.random.default_rng(1)
        p = MinutePacket(vehicle_id="FUZZ1", model="ref", boot_id=bytes(16), seq=3, start_time=1_767_225_600,
                         fingerprint=schema.fingerprint, values=rng.integers(0, 1000, size=(n, 20), dtype=np.uint64),
                         present=rng.random((n, 20)) > 0.2)
        _cache.update(schema=schema, packet=encode(p), schema_json=schema.to_json(),
                      dbc_text=Path(dbc.REFERENCE_DBC).read_text())
    return _cache


# -- inputs ---------------------------------------------------------------------------------------

def _json_values():
    from hypothesis import strategies as st

    leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
    return st.recursive(leaves, lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=10), kids,
                                                                                           max_size=5), max_leaves=30)


def _mutated(base: bytes):
    """Bit flips, truncations, insertions, overwrites and splices of ``base``."""
    from hypothesis import strategies as st

    def apply(ops: list[tuple[int, int, int, bytes]]) -> bytes:
        data = bytearray(base)
        for kind, pos, bit, chunk in ops:
            if not data:
                data = bytearray(chunk)
                continue
            pos %= len(data)
            if kind == 0:
                data[pos] ^= 1 << bit
            elif kind == 1:
                del data[pos:]
            elif kind == 2:
                data[pos:pos] = chunk
            else:
                data[pos:pos + len(chunk)] = chunk
        return bytes(data)

    op = st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, 7), st.binary(max_size=16))
    return st.lists(op, min_size=1, max_size=4).map(apply)


def _packet_bodies():
    """msgpack maps with the packet's keys and random values, inside a valid v2 frame, so the
    body checks themselves are reached."""
    import msgpack
    import zstandard
    from hypothesis import strategies as st

    keys = ["vid", "model", "boot", "seq", "t0", "n", "fp", "clk", "sync", "corr", "w", "first", "mask", "d1", "d2",
            "d4", "d8"]
    value = (st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.floats() | st.text(max_size=140)
             | st.binary(max_size=64) | st.lists(st.integers(-(1 << 63), (1 << 64) - 1), max_size=8))
    good = {"vid": "V", "model": "m", "boot": bytes(16), "seq": 1, "t0": 1_767_225_600, "n": 2, "fp": bytes(8),
            "clk": "frame", "w": bytes([1]), "first": [0], "mask": b"", "d1": b"\x01"}

    def frame(changes: dict[str, Any], drop: list[str]) -> bytes:
        body = {**good, **changes}
        for k in drop:
            body.pop(k, None)
        raw = msgpack.packb(body, use_bin_type=True)
        z = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=True).compress(raw)
        return b"MP\x02\x00" + z

    return st.builds(frame, st.dictionaries(st.sampled_from(keys), value, max_size=6),
                      st.lists(st.sampled_from(keys), max_size=3))


def _schema_docs():
    """Valid schema JSON with one field replaced by anything, deep nesting, huge documents."""
    from hypothesis import strategies as st

    def replace(doc_path: tuple[int, str, Any]) -> bytes:
        base = json.loads(_reference()["schema_json"])
        col, key, value = doc_path
        if key.startswith("top:"):
            base[key[4:]] = value
        else:
            c = base["columns"][col % len(base["columns"])]
            if key.startswith("bits.") and isinstance(c.get("bits"), dict):
                c["bits"][key[5:]] = value
            else:
                c[key] = value
        return json.dumps(base).encode()

    col_keys = ["name", "message", "frame_id", "extended", "signal", "aggregate", "kind", "scale", "offset", "unit",
                "minimum", "maximum", "choices", "bits", "multiplexer", "is_multiplexer", "vss", "bits.start",
                "bits.length", "bits.byte_order", "bits.signed", "bits.float", "top:v", "top:columns",
                "top:collection", "top:source"]
    names = st.sampled_from(["ts", "seq", "boot_id", "vehicle", "out_of_range", "model", "date", "vehicle_bucket",
                             "Seq", "TS", "x" * 300, "", "a/b", "..", "\x00", "VehicleSpeed"])
    replaced = st.builds(replace, st.tuples(st.integers(0, 1000), st.sampled_from(col_keys), _json_values() | names))
    deep = st.integers(1, 200_000).map(lambda d: b"[" * d + b"]" * d) | st.integers(1, 200_000).map(
        lambda d: b'{"a":' * d + b"1" + b"}" * d)
    return replaced | deep | st.binary(max_size=200) | _json_values().map(lambda v: json.dumps(v).encode())


def _topics():
    from hypothesis import strategies as st

    level = st.sampled_from(["dcm", "V1", "schemas", "events", "+", "#", "", "$SYS", "telemetry", "status",
                             "0123456789abcdef", "config", "x" * 200]) | st.text(max_size=12)
    return st.lists(level, min_size=0, max_size=5).map("/".join)


def _toml_docs(base: str):
    """TOML texts: ``base`` with a value replaced, or random key/value documents."""
    from hypothesis import strategies as st

    def toml_value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v) if v == v and v not in (float("inf"), float("-inf")) else "nan"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(toml_value(x) for x in v) + "]"
        return '"x"'

    lines = base.splitlines()

    def mutate(args: tuple[int, Any, str]) -> str:
        i, v, extra = args
        out = list(lines)
        idx = [k for k, line in enumerate(out) if "=" in line]
        if idx:
            k = idx[i % len(idx)]
            key = out[k].split("=", 1)[0]
            out[k] = f"{key}= {toml_value(v)}"
        return "\n".join(out) + "\n" + extra

    scalar = st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats() | st.text(max_size=30) | st.lists(
        st.integers() | st.text(max_size=5), max_size=3)
    extra = st.sampled_from(["", "[x]\ny = 1\n", "unknown = 2\n", "= =\n", "[[a]]\n", "\x00"])
    return st.builds(mutate, st.tuples(st.integers(0, 1000), scalar, extra)) | st.text(max_size=200)


# -- targets --------------------------------------------------------------------------------------

def _codec(data: bytes) -> None:
    from minute_packet import PacketError
    from minute_packet.codec import decode, validate

    try:
        validate(data)
    except PacketError:
        return
    try:
        decode(data)  # what validate accepts, decode must decode
    except PacketError as exc:
        raise AssertionError(f"validate accepted what decode refused: {exc}") from None


def _schema(data: bytes) -> None:
    from minute_packet import Schema, SchemaError

    try:
        s = Schema.from_json(data)
    except SchemaError:
        return
    s.fingerprint  # an accepted schema can be fingerprinted and its columns typed
    for c in s.columns:
        c.value_type


def _validator(args: tuple[str, bytes]) -> None:
    from cloud_sink.validator import Validator
    from minute_packet import Topics

    ref = _reference()
    v = _cache.setdefault("validator", Validator(Topics("dcm"), {ref["schema"].fingerprint: ref["schema"]}))
    v.check(*args)  # never raises: every bad input is a verdict


def _file_target(loader: Callable[[Path], Any], suffix: str) -> Callable[[str], None]:
    def run(text: str) -> None:
        with tempfile.TemporaryDirectory(prefix="dcm-fuzz-") as tmp:
            path = Path(tmp) / f"input{suffix}"
            path.write_text(text, errors="surrogateescape") if isinstance(text, str) else path.write_bytes(text)
            try:
                loader(path)
            except DcmError:
                return
    return run


def _rules(text: str) -> None:
    from speed_layer.config import load_rules

    try:
        load_rules(text=text)
    except DcmError:
        return


def _batch(text: str) -> None:
    import tomllib

    from batch_layer.config import config_from_dict

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    try:
        config_from_dict(doc)
    except DcmError:
        return


def _gateway_config(path: Path) -> None:
    from gateway.config import load
    load(path)


def _sink_config(path: Path) -> None:
    from cloud_sink.config import load_config
    load_config(path)


def _dbc(path: Path) -> None:
    dbc.load(path)


def _targets() -> dict[str, tuple[Callable[[], Any], Callable[[Any], None]]]:
    from hypothesis import strategies as st

    ref = _reference()
    gw = (ROOT / "deploy" / "gateway.example.toml").read_text()
    sk = (ROOT / "deploy" / "sink.example.toml").read_text()
    rules = (ROOT / "speed_layer" / "rules.example.toml")
    rules_text = rules.read_text() if rules.exists() else "[rules.speeding]\nlimit_kmh = 120\n"
    return {
        "codec": (lambda: _mutated(ref["packet"]) | _packet_bodies() | st.binary(max_size=64), _codec),
        "schema": (_schema_docs, _schema),
        "validator": (lambda: st.tuples(_topics(), _mutated(ref["packet"]) | _schema_docs()), _validator),
        "rules": (lambda: _toml_docs(rules_text), _rules),
        "batch_config": (lambda: _toml_docs("[trips]\nmin_distance_m = 200\n[harsh]\n[score]\n"), _batch),
        "gateway_config": (lambda: _toml_docs(gw), _file_target(_gateway_config, ".toml")),
        "sink_config": (lambda: _toml_docs(sk), _file_target(_sink_config, ".toml")),
        "dbc": (lambda: _mutated(ref["dbc_text"].encode()).map(lambda b: b.decode("utf-8", "replace")),
                _file_target(_dbc, ".dbc")),
    }


TARGETS = ("codec", "schema", "validator", "rules", "batch_config", "gateway_config", "sink_config", "dbc")


def campaign(target: str, examples: int, *, seed: int = 0) -> Campaign:
    """Run ``examples`` generated inputs through ``target``; crashes are collected, not raised."""
    from hypothesis import HealthCheck, Phase, given, seed as hseed, settings

    strategy, run = _targets()[target]
    result = Campaign(target)

    @hseed(seed)
    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy())
    def body(value: Any) -> None:
        result.cases += 1
        try:
            run(value)
        except Exception as exc:  # anything else is a crash: record it and go on
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            if len(result.crashes) < 20:
                result.crashes.append(Crash(target, f"{type(exc).__name__}: {str(exc)[:200]}",
                                            f"{os.path.relpath(tb.filename, ROOT)}:{tb.lineno}", repr(value)[:300]))

    body()
    return result
