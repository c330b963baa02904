"""The series reader opens only the vehicle's own bucket where the sink recorded the lake's layout."""
from __future__ import annotations

import pytest

from fleet_api.errors import SourceUnavailable
from fleet_api.series import LakeReader
from minute_packet.masking import lake_bucket, mask_vehicle

from helpers.batch_lake import SECRET, T0, CraftedLake, drive, park, trace


def test_only_the_vehicles_bucket_is_read(tmp_path):
    world = CraftedLake(tmp_path, layout="bucket")  # its sinks use 2 buckets
    vins = ["CAR-A", "CAR-B", "CAR-C", "CAR-D", "CAR-E"]
    for i, vin in enumerate(vins):
        world.add(vin, trace(T0, [park(30), drive(300, 40 + i), park(30)]))
    world.close()
    masked = {v: mask_vehicle(SECRET, v) for v in vins}
    target = vins[0]
    others = [v for v in vins if lake_bucket(masked[v], 2) != lake_bucket(masked[target], 2)]
    assert others, "the vehicles must span both buckets"
    reader = LakeReader(world.lake)
    assert reader.buckets == 2
    want = reader.series(masked[target], ["VehicleSpeed"], T0, T0 + 360, 60)
    assert sum(want["signals"]["VehicleSpeed"]["count"]) > 0
    # break every file of the other bucket: the target's series does not notice
    other_files = reader.files(masked[others[0]], T0, T0 + 360)
    for f in other_files:
        with open(f, "wb") as out:
            out.write(b"not parquet")
    assert LakeReader(world.lake).series(masked[target], ["VehicleSpeed"], T0, T0 + 360, 60) == want
    # without the layout file every bucket is opened, and the broken one fails the query
    (tmp_path / "lake" / "_dcm_lake.json").unlink()
    blind = LakeReader(world.lake)
    assert blind.buckets is None
    with pytest.raises(SourceUnavailable):
        blind.series(masked[target], ["VehicleSpeed"], T0, T0 + 360, 60)


def test_answers_are_cached_until_the_lake_gets_a_new_file(tmp_path):
    world = CraftedLake(tmp_path, layout="bucket")
    world.add("CAR-A", trace(T0, [park(30), drive(300, 40), park(30)]))
    reader = LakeReader(world.lake)
    vid = mask_vehicle(SECRET, "CAR-A")
    first = reader.series(vid, ["VehicleSpeed"], T0, T0 + 3600, 60)
    assert reader.series(vid, ["VehicleSpeed"], T0, T0 + 3600, 60) == first and reader.cache_hits == 1
    world.add("CAR-A", trace(T0 + 1200, [drive(120, 50)]))  # a new lake file with later rows
    world.close()
    later = reader.series(vid, ["VehicleSpeed"], T0, T0 + 3600, 60)
    assert reader.cache_hits == 1
    assert sum(later["signals"]["VehicleSpeed"]["count"]) == sum(first["signals"]["VehicleSpeed"]["count"]) + 120
