"""bms.read_gbt32960 and bms.Gbt32960Decoder (bms-core's GB/T 32960 decoder, the code of
`bms ingest` and the C library): the worked examples of docs/GBT32960.md §8 decode to their
values, in one piece or byte by byte; refused packets are reported with their offset and
decoding goes on; strict mode raises InvalidInputError; files and file objects work; the
frames feed bms.daily as they are."""

import io
import math

import numpy as np
import pandas as pd
import pytest

import bms

VIN = "LSPECEXAMPLE00001"


def packet(text: str) -> bytes:
    vin = " ".join(f"{b:02X}" for b in VIN.encode())
    return bytes(int(b, 16) for b in text.replace("<VIN>", vin).split())


REALTIME_2016 = packet("""23 23 02 FE <VIN> 01 00 3C  19 03 0A 07 14 00
    01  01 03 01 01 6D 00 01 D6 19 0D E6 26 95 2A 01 2E 12 C0 14 00
    07  01 00 00 04 00 00 00 00 00
    08  01  01 00 4A 26 95 00 02 00 01 02 0E 80 FF FF
    09  01  01 00 02 41 FF
    00""")

REALTIME_2025 = packet("""24 24 02 FE <VIN> 01 00 44  19 03 0A 07 14 00
    01  01 03 01 01 6D 00 01 D6 19 0D E6 74 B5 2A 01 2E 12 C0
    06  01 00 00 04 00 00 00 00 00 01 0A 01
    07  01  01 00 4A 74 B5 00 02 0E 80 FF FF
    08  01  01 00 02 41 FF
    FF 01 00 02 A1 A2 00 02 B1 B2  94""")

HEARTBEAT_2016 = packet("23 23 07 FE <VIN> 01 00 00 C8")

BAD_BCC = REALTIME_2016[:-1] + bytes([REALTIME_2016[-1] ^ 0x5A])
STREAM = HEARTBEAT_2016 + BAD_BCC + REALTIME_2016 + REALTIME_2025


def check_example(row: pd.Series, edition: int, offset: int) -> None:
    assert row["vin"] == VIN
    assert row["timestamp"] == 1_741_562_400_000
    assert (row["pack_voltage"], row["pack_current"], row["soc"]) == (355.8, -12.3, 42.0)
    assert row["cell_voltages"][0] == 3.712 and math.isnan(row["cell_voltages"][1])
    assert row["temperatures"][0] == 25.0 and math.isnan(row["temperatures"][1])
    assert row["alarm_flags"] == 0x400
    assert (row["edition"], row["command"], row["offset"]) == (edition, 2, offset)


def check_stream(cap: bms.Capture) -> None:
    assert len(cap.frames) == 2
    at16 = len(HEARTBEAT_2016) + len(BAD_BCC)
    check_example(cap.frames.iloc[0], 2016, at16)
    check_example(cap.frames.iloc[1], 2025, at16 + len(REALTIME_2016))
    assert cap.refused.to_dict("records") == [
        {
            "offset": len(HEARTBEAT_2016),
            "length": len(BAD_BCC),
            "kind": "checksum",
            "command": "realtime report",
            "vin": VIN,
            "reason": cap.refused["reason"][0],
        }
    ]
    assert "BCC" in cap.refused["reason"][0] or "checksum" in cap.refused["reason"][0]
    c = cap.counts
    assert (c["bytes"], c["packets"], c["frames"], c["errors"]) == (len(STREAM), 3, 2, 1)
    assert c["by_command"] == {"realtime report": 2, "heartbeat": 1}
    assert c["errors_by_kind"] == {"checksum": 1}
    assert c["error_bytes"] == len(BAD_BCC)


def test_bytes_file_and_file_object_decode_the_same(tmp_path):
    check_stream(bms.read_gbt32960(STREAM))
    path = tmp_path / "capture.bin"
    path.write_bytes(STREAM)
    check_stream(bms.read_gbt32960(path))
    check_stream(bms.read_gbt32960(str(path)))
    check_stream(bms.read_gbt32960(io.BytesIO(STREAM)))


def test_byte_by_byte_gives_the_same_frames():
    dec = bms.Gbt32960Decoder()
    parts = [dec.push(STREAM[i:i + 1]) for i in range(len(STREAM))]
    assert dec.pending == 0
    parts.append(dec.finish())
    frames = pd.concat([p.frames for p in parts if len(p.frames)], ignore_index=True)
    whole = bms.read_gbt32960(STREAM).frames
    pd.testing.assert_frame_equal(frames.drop(columns=["cell_voltages", "temperatures"]),
                                  whole.drop(columns=["cell_voltages", "temperatures"]))
    for a, b in zip(frames["cell_voltages"], whole["cell_voltages"]):
        np.testing.assert_array_equal(a, b)
    refused = [r for p in parts for r in p.refused.to_dict("records")]
    assert [r["offset"] for r in refused] == [len(HEARTBEAT_2016)]
    assert dec.counts["frames"] == 2


def test_a_truncated_last_packet_is_reported_at_finish():
    dec = bms.Gbt32960Decoder()
    got = dec.push(REALTIME_2016 + REALTIME_2025[:30])
    assert len(got.frames) == 1 and len(got.refused) == 0
    assert dec.pending == 30
    end = dec.finish()
    assert len(end.frames) == 0
    assert end.refused["kind"].tolist() == ["truncated"]
    assert end.refused["offset"].tolist() == [len(REALTIME_2016)]


def test_strict_raises_naming_the_offset_and_vin(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(STREAM)
    with pytest.raises(bms.InvalidInputError) as e:
        bms.read_gbt32960(path, strict=True)
    text = str(e.value)
    assert str(path) in text and f"byte offset {len(HEARTBEAT_2016)}" in text and VIN in text
    assert isinstance(e.value, ValueError)


def test_bad_sources_raise_the_right_class(tmp_path):
    with pytest.raises(bms.BmsFileNotFoundError) as e:
        bms.read_gbt32960(tmp_path / "missing.bin")
    assert isinstance(e.value, FileNotFoundError) and "missing.bin" in str(e.value)
    with pytest.raises(TypeError):
        bms.read_gbt32960(12)
    with pytest.raises(TypeError, match="binary mode"):
        bms.read_gbt32960(io.StringIO("##"))
    with pytest.raises(TypeError):
        bms.Gbt32960Decoder().push("##")


def test_garbage_is_refused_not_raised():
    cap = bms.read_gbt32960(b"hello, not a packet" + REALTIME_2025)
    assert len(cap.frames) == 1
    assert cap.refused["kind"].tolist() == ["not-a-packet"]
    assert cap.refused["vin"].tolist() == [None]
    empty = bms.read_gbt32960(b"")
    assert len(empty.frames) == 0 and len(empty.refused) == 0
    assert list(empty.frames.columns) == ["vin", "timestamp", "pack_voltage", "pack_current", "soc",
                                          "cell_voltages", "temperatures", "alarm_flags", "offset",
                                          "edition", "command"]


def test_frames_feed_daily():
    cap = bms.read_gbt32960(REALTIME_2016)
    d = bms.daily(cap.frames)
    assert d["VIN"].tolist() == [VIN]
    assert d["frames"].tolist() == [1.0]
    assert d["Label"].tolist() == [1]  # alarm flag bit 10 set
