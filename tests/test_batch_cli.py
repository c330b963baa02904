"""``dcm views refresh|show``, ``dcm trips`` and ``dcm scores`` on a crafted lake: JSON for machines,
tables for people, a progress bar on stderr, one-line errors with exit code 2."""
from __future__ import annotations

import json

import pytest

from dcm.cli import main
from helpers.batch_lake import SECRET, T0, CraftedLake, drive, idle, park, ramp, trace

VIN = "WDB1234561A000001"
TRIP = [idle(20), ramp(20, 0, 80), drive(300, 80), ramp(3, 80, 50), drive(100, 50), ramp(20, 50, 0), idle(30)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    lake = CraftedLake(root)
    for d in range(3):
        lake.add(VIN, trace(T0 + d * 86400 + 3600, [*TRIP, park(400), *TRIP]))
    lake.close()
    ops = root / "ops"
    ops.mkdir()
    (ops / "vehicles.csv").write_text(f"vin,plate,model,fleet\n{VIN},M-AB 123,ref,north\n")
    (ops / "devices.csv").write_text(f"device_id,vin,installed_from\nd1,{VIN},2025-01-01\n")
    (ops / "drivers.csv").write_text("driver_id,name\nD1,Ada\n")
    (ops / "assignments.csv").write_text(f"driver_id,vin,valid_from,valid_to\nD1,{VIN},2025-01-01,\n")
    (root / "key").write_bytes(SECRET)
    base = ["--lake", lake.lake, "--views", str(root / "views"), "--ops", f"csv:{ops}", "--secret-file",
            str(root / "key"), "--threads", "1"]
    return root, base


def _run(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_refresh_then_query(setup, capsys):
    root, base = setup
    code, out, err = _run(capsys, ["views", "refresh", *base, "--watermark", "2026-01-03"])
    assert code == 0 and "2 days recomputed (2026-01-01..2026-01-02)" in out and "views refresh" in err  # tqdm
    code, out, _ = _run(capsys, ["views", "refresh", *base, "--watermark", "2026-01-03", "--json"])
    assert code == 0 and json.loads(out)["recomputed_days"] == [] and json.loads(out)["fresh_days"] == 2
    code, out, _ = _run(capsys, ["trips", *base, "--json", "--vehicle", VIN])
    rows = json.loads(out)["rows"]
    assert code == 0 and len(rows) == 6 and {r["plate"] for r in rows} == {"M-AB 123"}
    assert all(r["driver"] == "D1" and 1 <= r["score"] <= 100 and r["explanation"] for r in rows)
    assert VIN not in out
    code, out, _ = _run(capsys, ["trips", *base, "--since", "2026-01-02", "--events"])
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].split()[:3] == ["start", "plate", "vehicle"] and len(lines) == 1 + 4
    code, out, _ = _run(capsys, ["scores", *base, "--period", "day", "--json"])
    scores = json.loads(out)["rows"]
    assert [(s["period_start"], s["trips"], s["name"]) for s in scores] == [
        ("2026-01-01", 2, "Ada"), ("2026-01-02", 2, "Ada"), ("2026-01-03", 2, "Ada")]
    code, out, _ = _run(capsys, ["scores", *base, "--period", "year", "--explain"])
    assert code == 0 and "Ada" in out and "2026-01-01" in out and "exposure_prior" in out
    code, out, _ = _run(capsys, ["views", "show", "km-per-vehicle-year", *base, "--json"])
    (km,) = json.loads(out)["rows"]
    assert km["plate"] == "M-AB 123" and km["trips"] == 6 and km["distance_km"] == pytest.approx(6 * 8.2, rel=0.05)


@pytest.mark.parametrize("extra, message", [
    (["views", "refresh", "--watermark", "soon"], "--watermark: 'soon' is not a date"),
    (["views", "show"], "views show: name one of"),
    (["scores", "--config", "/nonexistent.toml"], "cannot read"),
])
def test_bad_input_is_one_line_and_exit_2(setup, capsys, extra, message):
    _, base = setup
    head = 2 if extra[0] == "views" else 1
    code, out, err = _run(capsys, [*extra[:head], *base, *extra[head:]])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_ops_need_the_key(setup, capsys):
    _, base = setup
    argv = [a for a in base]
    i = argv.index("--secret-file")
    del argv[i:i + 2]
    code, _, err = _run(capsys, ["trips", *argv])
    assert code == 2 and "--ops needs --secret-file" in err
