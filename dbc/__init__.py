"""DBC files shipped with the project and the one loader every side uses.

``REFERENCE_DBC`` is our own connected passenger car (see ``dbc/README.md``).
:func:`load` accepts any DBC (a real car's from opendbc, say) and turns every
problem with it into :class:`DbcError`, so a bad file never surfaces as a
parser traceback.
"""
from __future__ import annotations

from pathlib import Path

import cantools

from dcm_base.errors import InputError

REFERENCE_DBC = Path(__file__).with_name("reference_car.dbc")
REFERENCE_VSS = Path(__file__).with_name("reference_car.vss.json")  # its COVESA VSS overlay (minute_packet.vss)


class DbcError(InputError):
    """A DBC file could not be read or parsed."""


def load(path: str | Path) -> cantools.database.Database:
    """Load a DBC file.

    Real-world DBCs often break cantools' strict checks (overlapping signals,
    signals past the frame end), so a strict load that fails is retried
    non-strictly; only an unreadable or unparsable file raises.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="cp1252", errors="replace")
    except OSError as exc:
        raise DbcError(f"{path}: cannot read DBC: {exc.strerror or exc}") from exc
    last: Exception | None = None
    for strict in (True, False):
        try:
            db = cantools.database.load_string(text, database_format="dbc", strict=strict)
        except Exception as exc:  # cantools raises many types for bad input
            last = exc
            continue
        if not db.messages:
            raise DbcError(f"{path}: DBC defines no messages")
        return db
    raise DbcError(f"{path}: not a valid DBC: {last}") from last
