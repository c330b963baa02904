"""The whole chain: simulator → python-can bus → gateway → Mosquitto → sink → Parquet,
checked cell by cell against a direct cantools decode of the frames sent."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from dcm.demo import DemoSettings, run_demo

T0 = 1_767_225_600
TOYOTA = Path(__file__).parent / "data" / "toyota_opendbc.dbc"


def _check(result: dict, vehicles: int, duration: int) -> None:
    assert result["vehicles"] == vehicles
    assert result["frames_read"] == result["frames_sent"] > 0
    assert result["packets_written"] == result["packets_published"] > 0
    assert result["vehicle_seconds"] == vehicles * duration
    assert result["rows_written"] == result["vehicle_seconds"]
    assert result["mismatches"] == 0, result  # frames_late, packets_* say where cells went
    assert result["quarantined"] == 0
    assert result["bytes_per_vehicle_minute"] > 0


def test_reference_car_end_to_end(tmp_path, broker):
    settings = DemoSettings(vehicles=2, duration_s=130, broker=str(broker), seed=7, workdir=tmp_path, start_time=T0 + 30)
    result = run_demo(settings)
    _check(result, 2, 130)
    print(f"\nreference car: {result['bytes_per_vehicle_minute']} bytes per vehicle-minute")
    # the lake is readable by plain DuckDB, no project code
    rows = duckdb.connect().execute(
        f"SELECT count(*), count(DISTINCT vehicle), min(ts), max(VehicleSpeed) FROM "
        f"read_parquet('{tmp_path}/lake/**/*.parquet', hive_partitioning = true)"
    ).fetchone()
    assert rows[0] == 260 and rows[1] == 2
    assert int(rows[2].timestamp()) == T0 + 30
    assert rows[3] > 0


@pytest.mark.skipif(not TOYOTA.exists(), reason="tests/data/toyota_opendbc.dbc not present")
def test_a_real_cars_dbc_end_to_end(tmp_path, broker):
    result = run_demo(DemoSettings(vehicles=1, duration_s=70, dbc_path=TOYOTA, broker=str(broker), seed=3,
                                   workdir=tmp_path, start_time=T0))
    _check(result, 1, 70)


def test_another_dbc_end_to_end(tmp_path, broker):
    path = tmp_path / "small.dbc"
    path.write_text(SMALL_DBC)
    result = run_demo(DemoSettings(vehicles=1, duration_s=65, dbc_path=path, broker=str(broker), seed=5,
                                   workdir=tmp_path / "w", start_time=T0))
    _check(result, 1, 65)


def test_a_multi_level_topic_prefix_end_to_end(tmp_path, broker):
    """Gateway and sink under a 3-level prefix: every packet is stored, nothing is quarantined."""
    prefix = f"fleet/eu/{tmp_path.name[-12:]}"
    result = run_demo(DemoSettings(vehicles=1, duration_s=65, broker=str(broker), seed=9, workdir=tmp_path,
                                   start_time=T0, topic_prefix=prefix))
    _check(result, 1, 65)


def test_demo_command_prints_json_with_a_private_broker(tmp_path):
    out = subprocess.run([sys.executable, "-m", "dcm.cli", "demo", "--json", "--vehicles", "1", "--duration", "61"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["broker"].startswith("mqtt://127.0.0.1:")
    assert result["mismatches"] == 0 and result["rows_written"] == result["vehicle_seconds"] >= 61


def test_bad_dbc_gives_a_one_line_error_and_exit_2(tmp_path):
    bad = tmp_path / "bad.dbc"
    bad.write_text("this is not a DBC\n")
    out = subprocess.run([sys.executable, "-m", "dcm.cli", "demo", "--dbc", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().startswith(f"dcm demo: {bad}")
    assert len(out.stderr.strip().splitlines()) == 1


SMALL_DBC = '''VERSION ""
NS_ :
BS_:
BU_: ECU
BO_ 256 Engine: 8 ECU
 SG_ Rpm : 0|16@1+ (0.25,0) [0|16000] "rpm" ECU
 SG_ Temp : 16|8@1- (1,-40) [-40|120] "degC" ECU
 SG_ Mode : 24|3@1+ (1,0) [0|7] "" ECU
BO_ 2566844672 GnssExt: 8 ECU
 SG_ Heading : 7|16@0+ (0.01,0) [0|359.99] "deg" ECU
 SG_ Climb : 23|16@0- (0.1,0) [-100|100] "m/s" ECU
BO_ 512 Diag: 8 ECU
 SG_ Page M : 0|8@1+ (1,0) [0|3] "" ECU
 SG_ PageA m0 : 8|16@1+ (1,0) [0|1000] "" ECU
 SG_ PageB m1 : 8|32@1- (0.5,0) [-1000|1000] "" ECU
BO_ 768 Floaty: 8 ECU
 SG_ Ratio : 0|32@1- (1,0) [-10|10] "" ECU
BA_DEF_ BO_ "GenMsgCycleTime" INT 0 10000;
BA_DEF_DEF_ "GenMsgCycleTime" 100;
BA_ "GenMsgCycleTime" BO_ 256 10;
BA_ "GenMsgCycleTime" BO_ 2566844672 50;
BA_ "GenMsgCycleTime" BO_ 512 200;
BA_ "GenMsgCycleTime" BO_ 768 100;
VAL_ 256 Mode 0 "Off" 1 "Eco" 2 "Normal" 3 "Sport" ;
SIG_VALTYPE_ 768 Ratio : 1;
'''


# Non-strict DBC quirks seen in opendbc: two messages of one name (luxgen, volvo), a signal name
# repeated in its message (honda) and signal names differing only in case (hyundai); a scale of 0
# (every raw value means the offset), which once stopped the simulator's sender; overlapping
# signals (cantools' issue_63.dbc), whose message cantools cannot decode as a whole; a CAN FD
# signal longer than 64 bits, which no cell can hold (left out, and said so); one frame id defined
# by two messages (canmatrix's test_CAN.dbc): the bus carries one frame, the last definition's; a
# multiplexer selector overlapped by a branch's signal (canmatrix's test_test.kcd.dbc), which the
# simulator once sent with selector values of no branch; bounds and scales beyond float range; a
# signed selector with an unsigned branch id (canmatrix's aa.dbc, a CANopen SDO abort m128).
QUIRKY_DBC = '''VERSION ""
NS_ :
BS_:
BU_: ECU
BO_ 256 undefined: 8 ECU
 SG_ A : 0|8@1+ (1,0) [0|255] "" ECU
 SG_ Mode : 8|8@1+ (1,0) [0|255] "" ECU
 SG_ MODE : 16|8@1+ (1,0) [0|255] "" ECU
 SG_ Const : 24|8@1+ (0,5) [0|0] "" ECU
BO_ 257 undefined: 8 ECU
 SG_ B : 0|16@1+ (0.5,0) [0|1000] "" ECU
 SG_ SET_ME : 16|4@1+ (1,0) [0|15] "" ECU
 SG_ SET_ME : 24|7@1+ (1,0) [0|127] "" ECU
BO_ 258 Overlap: 8 ECU
 SG_ Good : 0|8@1+ (1,0) [0|255] "" ECU
 SG_ Low : 32|16@1+ (1,0) [0|65535] "" ECU
 SG_ High : 40|16@1+ (0.5,0) [0|32767] "" ECU
BO_ 260 Fd: 64 ECU
 SG_ Small : 0|8@1+ (1,0) [0|255] "" ECU
 SG_ Blob : 8|128@1+ (1,0) [0|0] "" ECU
BO_ 261 Twice: 8 ECU
 SG_ First : 0|8@1+ (1,0) [0|255] "" ECU
BO_ 261 TwiceAgain: 8 ECU
 SG_ Second : 0|16@1+ (1,0) [0|65535] "" ECU
BO_ 262 MuxLap: 8 ECU
 SG_ Sel M : 8|16@1+ (1,0) [0|9] "" ECU
 SG_ Zero m0 : 24|16@1+ (1,0) [5|10] "" ECU
 SG_ Node m5 : 16|8@1+ (1,0) [0|247] "" ECU
 SG_ Mask m5 : 24|8@1+ (1,0) [0|255] "" ECU
BO_ 263 Inf: 8 ECU
 SG_ Wide : 0|32@1+ (1,0) [0|1e400] "" ECU
 SG_ Huge : 32|8@1+ (1e400,0) [0|255] "" ECU
BO_ 264 Sdo: 8 ECU
 SG_ SdoState M : 0|8@1- (1,0) [-128|127] "" ECU
 SG_ Data8 m79 : 32|8@1+ (1,0) [0|255] "" ECU
 SG_ AbortCode m128 : 32|32@1+ (1,0) [0|4294967295] "" ECU
BA_DEF_ BO_ "GenMsgCycleTime" INT 0 10000;
BA_DEF_DEF_ "GenMsgCycleTime" 100;
'''


def test_non_strict_dbc_quirks_end_to_end(tmp_path, broker):
    path = tmp_path / "quirky.dbc"
    path.write_text(QUIRKY_DBC)
    result = run_demo(DemoSettings(vehicles=1, duration_s=65, dbc_path=path, broker=str(broker), seed=4,
                                   workdir=tmp_path / "w", start_time=T0))
    _check(result, 1, 65)
    assert result["frames_malformed"] == 0
    assert result["signals_left_out"] == ["undefined.SET_ME (name repeated later in its message)", "Fd.Blob (128 bits)",
                                          "Twice.First (its frame id is defined again by TwiceAgain)",
                                          "Inf.Huge (scale or offset not finite)"]
    names = {d[0] for d in duckdb.connect().execute(
        f"DESCRIBE SELECT * FROM read_parquet('{tmp_path}/w/lake/**/*.parquet', hive_partitioning = true)").fetchall()}
    assert {"A", "B", "undefined.Mode@100", "undefined.MODE@100#2", "SET_ME", "Const", "Good", "Low", "High", "Small", "Second", "Sel", "Zero", "Node",
            "Mask", "Wide", "SdoState", "Data8", "AbortCode"} <= names
    assert not {"Blob", "First"} & names
    consts = duckdb.connect().execute(f"SELECT DISTINCT Const FROM read_parquet('{tmp_path}/w/lake/**/*.parquet')").fetchall()
    assert consts == [(5,)]
    filled = duckdb.connect().execute(f"SELECT count(Good), count(Low), count(High) FROM "
                                      f"read_parquet('{tmp_path}/w/lake/**/*.parquet')").fetchone()
    assert filled == (65, 65, 65)
    aborts = duckdb.connect().execute(f"SELECT count(AbortCode) FROM "
                                      f"read_parquet('{tmp_path}/w/lake/**/*.parquet')").fetchone()
    assert aborts[0] > 0  # the m128 branch's signal arrived
