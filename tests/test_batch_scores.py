"""Driver score: the formula against Samsara's published worked example, exposure normalisation,
weights from TOML (validated), explanations, and per-driver day/month/year roll-ups."""
from __future__ import annotations

import dataclasses

import duckdb
import pyarrow as pa
import pytest

from batch_layer.config import KINDS, SEVERITIES, BatchConfig, ScoreParams, config_from_dict, load_config
from batch_layer.errors import BatchConfigError
from batch_layer.scoring import driver_scores, explain
from batch_layer.views_sql import COUNT_COLUMNS, score_columns

DAY = 20454  # 2026-01-01


def _score(params: ScoreParams, km: float, speeding_s: int, moving_s: int, **counts: int) -> dict:
    row = {n: counts.get(n[2:], 0) for n in COUNT_COLUMNS}
    row.update(distance_km=km, speeding_s=speeding_s, moving_s=moving_s)
    t = pa.table({k: [v] for k, v in row.items()})
    con = duckdb.connect()
    con.register("t", t)
    rel = con.sql(f"SELECT *, CAST(speeding_s AS DOUBLE) / moving_s AS speeding_share,"
                  f" {', '.join(score_columns(params))} FROM t")
    return dict(zip(rel.columns, rel.fetchall()[0]))


def test_samsara_worked_example():
    """Samsara's article: 100 - (5 harsh events / 247 miles * 1000) - (1h09m / 8h40m speeding) = 67 %."""
    per_1000_miles = ScoreParams(per_km=1609.344, credibility_km=0.0, prior_points=0.0, credibility_s=0.0,
                                 prior_speeding_share=0.0, severity_weights={"light": 1, "moderate": 1, "severe": 1})
    row = _score(per_1000_miles, 247 * 1.609344, 69 * 60, 520 * 60, harsh_brake_moderate=3, rapid_accel_moderate=2)
    # the article rounds each term (100 - 20 - 13 = 67); the total here is rounded once: 66.49 -> 66
    assert 100 - sum(v for k, v in row.items() if k.startswith("pts_")) == pytest.approx(66.49, abs=0.01)
    assert row["score"] == 66
    assert row["pts_harsh_brake_moderate"] + row["pts_rapid_accel_moderate"] == pytest.approx(5 / 247 * 1000)
    assert row["pts_speeding"] == pytest.approx(69 / 520 * 100)


def test_exposure_normalisation_neither_punishes_nor_flatters_a_short_trip():
    p = ScoreParams()
    raw = dataclasses.replace(p, credibility_km=0.0, prior_points=0.0, credibility_s=0.0, prior_speeding_share=0.0)
    one_event_short = _score(p, 2.0, 0, 150, harsh_brake_moderate=1)
    assert _score(raw, 2.0, 0, 150, harsh_brake_moderate=1)["score"] == 1  # 500 points per 1,000 km
    assert 70 <= one_event_short["score"] < 100
    clean_short, clean_long = _score(p, 2.0, 0, 150), _score(p, 400.0, 0, 18000)
    assert clean_short["score"] < 100 and clean_short["score"] < clean_long["score"]
    # the same rate of events over more distance converges to the raw rate
    assert _score(p, 2000.0, 0, 90000, harsh_brake_moderate=10)["score"] == pytest.approx(
        _score(raw, 2000.0, 0, 90000, harsh_brake_moderate=10)["score"], abs=1)
    # heavier severity costs more; the clamp keeps 1..100
    assert _score(p, 50, 0, 3000, sharp_turn_severe=1)["score"] < _score(p, 50, 0, 3000, sharp_turn_moderate=1)["score"]
    assert _score(p, 1, 0, 60, harsh_brake_severe=100)["score"] == 1


def test_explanation_adds_up_to_the_points_lost():
    row = _score(ScoreParams(), 80.0, 300, 4000, harsh_brake_moderate=3, rapid_accel_light=7, sharp_turn_severe=1)
    items = explain(row)
    assert [i["cause"] for i in items][:2] == ["harsh_brake", "sharp_turn"]
    assert {(i["cause"], i.get("severity"), i.get("events")) for i in items} >= {
        ("harsh_brake", "moderate", 3), ("rapid_accel", "light", 7), ("sharp_turn", "severe", 1)}
    assert 100 - sum(i["points"] for i in items) == pytest.approx(row["score"], abs=0.5 + 0.01 * len(items))


def test_weights_from_toml_are_validated(tmp_path):
    f = tmp_path / "batch.toml"
    f.write_text("[score]\nspeeding_weight = 2.0\ncredibility_km = 10\n[score.kind_weights]\nsharp_turn = 3\n"
                 "[trips]\nmin_stop_duration_s = 120\nuse_ignition = false\n[harsh]\nrapid_accel = [2.0, 3.0, 4.0]\n")
    cfg = load_config(f)
    assert cfg.score.speeding_weight == 2.0 and cfg.score.weight("sharp_turn", "moderate") == 3.0
    assert cfg.score.weight("harsh_brake", "severe") == 2.0  # defaults kept for the rest
    assert cfg.trips.min_stop_duration_s == 120 and not cfg.trips.use_ignition
    assert cfg.harsh.rapid_accel == (2.0, 3.0, 4.0) and cfg.digest() != BatchConfig().digest()
    bad = [({"score": {"speeding_weigth": 1}}, "score.speeding_weigth: unknown key"),
           ({"score": {"kind_weights": {"tailgating": 1}}}, "score.kind_weights.tailgating: unknown key"),
           ({"score": {"severity_weights": {"light": -1}}}, "score.severity_weights.light: must be between"),
           ({"harsh": {"sharp_turn": [5, 4, 6]}}, "harsh.sharp_turn: thresholds must increase"),
           ({"trips": {"min_stop_duration_s": 2.5}}, "trips.min_stop_duration_s: must be an integer"),
           ({"trips": {"use_ignition": "yes"}}, "trips.use_ignition: must be true or false"),
           ({"scoring": {}}, "scoring: unknown section")]
    for doc, msg in bad:
        with pytest.raises(BatchConfigError, match=msg.replace(".", r"\.")):
            config_from_dict(doc)
    f.write_text("[score\n")
    with pytest.raises(BatchConfigError, match="not valid TOML"):
        load_config(f)


def _driver_day(rows: list[dict]) -> pa.Table:
    full = [{**{n: 0 for n in COUNT_COLUMNS}, "speeding_s": 0, "duration_s": 0, **r} for r in rows]
    return pa.table({k: [r[k] for r in full] for k in full[0]})


def test_driver_scores_per_day_month_year_from_summed_exposure():
    dd = _driver_day([
        {"driver": "D1", "day": DAY, "trips": 2, "distance_km": 100.0, "moving_s": 4000, "n_harsh_brake_moderate": 1},
        {"driver": "D1", "day": DAY + 1, "trips": 1, "distance_km": 10.0, "moving_s": 600, "n_harsh_brake_moderate": 2},
        {"driver": "D1", "day": DAY + 40, "trips": 1, "distance_km": 50.0, "moving_s": 2000},
        {"driver": "D2", "day": DAY, "trips": 1, "distance_km": 30.0, "moving_s": 1800, "speeding_s": 900},
    ])
    cfg = BatchConfig()
    days = driver_scores(dd, cfg, "day").to_pylist()
    months = driver_scores(dd, cfg, "month").to_pylist()
    years = driver_scores(dd, cfg, "year").to_pylist()
    assert [(r["driver"], str(r["period_start"]), r["trips"]) for r in months] == [
        ("D1", "2026-01-01", 3), ("D1", "2026-02-01", 1), ("D2", "2026-01-01", 1)]
    (d1_year,) = [r for r in years if r["driver"] == "D1"]
    assert d1_year["trips"] == 4 and d1_year["distance_km"] == 160.0 and d1_year["n_harsh_brake_moderate"] == 3
    expected = _score(cfg.score, 160.0, 0, 6600, harsh_brake_moderate=3)["score"]
    assert d1_year["score"] == expected  # from the year's totals, not an average of day scores
    assert len(days) == 4 and all(1 <= r["score"] <= 100 for r in days)
    d2 = [r for r in years if r["driver"] == "D2"][0]
    assert d2["speeding_share"] == 0.5 and d2["score"] < 100 - 30  # (900 + 6) / (1800 + 600) of the time
    with pytest.raises(ValueError):
        driver_scores(dd, cfg, "week")


def test_every_kind_and_severity_has_a_weight():
    p = ScoreParams()
    assert {(k, s) for k in KINDS for s in SEVERITIES} == {(k, s) for k in p.kind_weights for s in p.severity_weights}
