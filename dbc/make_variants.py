"""Generate the fleet simulator's DBC variants from ``dbc/reference_car.dbc``.

Run from the repository root::

    .venv/bin/python dbc/make_variants.py          # writes the variant DBCs
    .venv/bin/python dbc/make_variants.py --check  # exit 1 if a variant is stale

``reference_car_2027.dbc`` is the reference car of a later model year: the
same DBC plus one signal, ``CLIMATE.CabinCo2`` (cabin CO2 in ppm, bits
32..43), so a fleet mixing both models shows a schema change in the lake.
The reference DBC itself is never touched.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).parent
REFERENCE = HERE / "reference_car.dbc"
ANCHOR = ' SG_ RearDefrost : 28|1@1+ (1,0) [0|1] "" DCM\n'
EXTRA_SIGNAL = ' SG_ CabinCo2 : 32|12@1+ (1,0) [0|4000] "ppm" DCM\n'
EXTRA_COMMENT = 'CM_ SG_ 996 CabinCo2 "Cabin CO2 concentration (model year 2027 and later).";\n'


def variant_2027(reference: str) -> str:
    """The 2027 model year DBC text: the reference plus ``CabinCo2``."""
    if ANCHOR not in reference:
        raise SystemExit("reference_car.dbc changed: CLIMATE.RearDefrost not found")
    text = reference.replace(ANCHOR, ANCHOR + EXTRA_SIGNAL, 1)
    marker = "\nBA_DEF_ "
    head, sep, tail = text.partition(marker)
    return head.rstrip("\n") + "\n\n" + EXTRA_COMMENT + sep.lstrip("\n") + tail if sep else text + EXTRA_COMMENT


VARIANTS = {"reference_car_2027.dbc": variant_2027}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if a variant file is stale")
    args = ap.parse_args(argv)
    reference = REFERENCE.read_text(encoding="cp1252")
    stale = []
    for name, make in VARIANTS.items():
        text = make(reference)
        path = HERE / name
        if args.check:
            if not path.exists() or path.read_text(encoding="cp1252") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="cp1252", newline="\n")
    if stale:
        print("stale: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
