"""Compare view tables from two computations: same rows, integers and strings exact, floats to 1e-9."""
from __future__ import annotations

import math

import pyarrow as pa


def assert_views_equal(a: dict[str, pa.Table], b: dict[str, pa.Table], rel: float = 1e-9) -> None:
    assert set(a) == set(b)
    for view in a:
        ta, tb = a[view], b[view]
        assert ta.column_names == tb.column_names, view
        assert ta.num_rows == tb.num_rows, (view, ta.num_rows, tb.num_rows)
        for name in ta.column_names:
            ca, cb = ta.column(name).to_pylist(), tb.column(name).to_pylist()
            for i, (x, y) in enumerate(zip(ca, cb)):
                if isinstance(x, float) and isinstance(y, float):
                    assert math.isclose(x, y, rel_tol=rel, abs_tol=1e-9), (view, name, i, x, y)
                else:
                    assert x == y, (view, name, i, x, y)
