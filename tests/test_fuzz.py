"""Hostile input, a bounded sample of dcm.fuzz per target (`dcm bench faults` runs >= 100,000
cases): no parser of outside data raises anything but its typed errors."""
from __future__ import annotations

import pytest

from dcm.fuzz import TARGETS, campaign

EXAMPLES = {"dbc": 60}


@pytest.mark.parametrize("target", TARGETS)
def test_no_crash_other_than_the_typed_errors(target):
    result = campaign(target, EXAMPLES.get(target, 150), seed=16)
    assert result.cases >= EXAMPLES.get(target, 150) // 2
    assert result.crashes == []


def test_a_schema_that_cannot_be_fingerprinted_is_refused_when_parsed():
    """Found by the fuzzer: a collection holding an integer beyond 2^53 parsed, then crashed the
    sink's validator when it computed the fingerprint (a retained message: every sink at start)."""
    import json

    from minute_packet import Schema, SchemaError

    from dcm.fuzz import _reference

    doc = json.loads(_reference()["schema_json"])
    doc["collection"]["default"] = [10 ** 21]
    with pytest.raises(SchemaError, match="canonicalised"):
        Schema.from_json(json.dumps(doc))
