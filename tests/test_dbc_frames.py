"""dbc.frames.decode_frame: cantools' decode, also for messages its whole-message codec cannot decode."""
from __future__ import annotations

import cantools
import pytest

from dbc.frames import decode_frame

# Overlapping signals (bits 40-47 are in both), as in cantools' own issue_63.dbc and many sloppy
# DBCs: cantools' message codec fails on every frame ("unpacking failed"), each signal alone decodes.
OVERLAP = '''VERSION ""
NS_ :
BS_:
BU_: ECU
BO_ 258 Overlap: 8 ECU
 SG_ Good : 0|8@1+ (1,0) [0|255] "" ECU
 SG_ Low : 32|16@1+ (1,0) [0|65535] "" ECU
 SG_ High : 40|16@1+ (0.5,0) [0|32767] "" ECU
BO_ 259 MuxOverlap: 8 ECU
 SG_ Sel M : 0|2@1+ (1,0) [0|3] "" ECU
 SG_ A m0 : 8|16@1+ (1,0) [0|65535] "" ECU
 SG_ B m0 : 16|16@1+ (1,0) [0|65535] "" ECU
 SG_ C m1 : 8|8@1+ (1,0) [0|255] "" ECU
BO_ 260 Sdo: 8 ECU
 SG_ State M : 0|8@1- (1,0) [-128|127] "" ECU
 SG_ Data8 m79 : 32|8@1+ (1,0) [0|255] "" ECU
 SG_ Abort m128 : 32|32@1+ (1,0) [0|4294967295] "" ECU
'''
DATA = bytes.fromhex("13796d83726f9600")


def _alone(message, name: str, data: bytes, scaling: bool):
    sig = message.get_signal_by_name(name)
    one = cantools.database.can.Message(frame_id=message.frame_id, name="x", length=message.length,
                                        signals=[sig], strict=False)
    return one.decode(data, decode_choices=False, scaling=scaling)[name]


@pytest.fixture
def db():
    return cantools.database.load_string(OVERLAP, strict=False)


def test_overlapping_signals_decode_one_by_one(db):
    m = db.get_message_by_name("Overlap")
    with pytest.raises(cantools.database.errors.DecodeError):
        m.decode(DATA)  # what the gateway used to count as malformed, losing Good too
    for scaling in (False, True):
        got = decode_frame(m, DATA, scaling=scaling)
        assert got == {n: _alone(m, n, DATA, scaling) for n in ("Good", "Low", "High")}
    assert decode_frame(m, DATA, scaling=False)["Good"] == 0x13


def test_a_multiplexed_message_keeps_only_its_branch(db):
    m = db.get_message_by_name("MuxOverlap")
    branch0 = bytes([0x00]) + DATA[1:]
    branch1 = bytes([0x01]) + DATA[1:]
    assert set(decode_frame(m, branch0, scaling=False)) == {"Sel", "A", "B"}
    assert decode_frame(m, branch1, scaling=False) == {"Sel": 1, "C": DATA[1]}


def test_a_sound_message_is_decoded_whole_and_truncated_frames_give_what_fits(db):
    sound = cantools.database.load_string(OVERLAP.replace(" SG_ High : 40|16@1+ (0.5,0) [0|32767] \"\" ECU\n", ""),
                                          strict=False).get_message_by_name("Overlap")
    assert decode_frame(sound, DATA, scaling=False) == sound.decode(DATA, decode_choices=False, scaling=False)
    assert decode_frame(sound, DATA[:1], scaling=False) == {"Good": 0x13}


def test_a_signed_selector_with_an_unsigned_branch_id_chooses_by_its_bits(db):
    """canmatrix's aa.dbc (CANopen SDO): branch m128 on a signed 8-bit selector; the bus carries 0x80."""
    m = db.get_message_by_name("Sdo")
    abort = bytes([0x80, 0, 0, 0, 0x11, 0x22, 0x33, 0x44])
    with pytest.raises(cantools.database.errors.DecodeError):
        m.decode(abort)
    assert decode_frame(m, abort, scaling=False) == {"State": -128, "Abort": 0x44332211}
    assert decode_frame(m, bytes([79, 0, 0, 0, 7, 0, 0, 0]), scaling=False) == {"State": 79, "Data8": 7}
    with pytest.raises(cantools.database.errors.DecodeError):
        decode_frame(m, bytes([5]) + bytes(7), scaling=False)  # a selector of no branch stays malformed
