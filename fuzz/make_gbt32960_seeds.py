"""Writes the seed corpus of the gbt32960 fuzz target (fuzz/corpus/gbt32960/): the
worked examples of docs/GBT32960.md §8 (both editions), a heartbeat, a stream mixing
them with garbage and a truncated packet. Each seed starts with the target's control
byte (how many of the next bytes are piece sizes) and those sizes.

Run from fuzz/ with any Python 3:  python make_gbt32960_seeds.py
"""

import pathlib

HERE = pathlib.Path(__file__).parent / "corpus" / "gbt32960"
VIN = "LSPECEXAMPLE00001"

REALTIME_2016 = """23 23 02 FE <VIN> 01 00 3C  19 03 0A 07 14 00
    01  01 03 01 01 6D 00 01 D6 19 0D E6 26 95 2A 01 2E 12 C0 14 00
    07  01 00 00 04 00 00 00 00 00
    08  01  01 00 4A 26 95 00 02 00 01 02 0E 80 FF FF
    09  01  01 00 02 41 FF
    00"""

REALTIME_2025 = """24 24 02 FE <VIN> 01 00 44  19 03 0A 07 14 00
    01  01 03 01 01 6D 00 01 D6 19 0D E6 74 B5 2A 01 2E 12 C0
    06  01 00 00 04 00 00 00 00 00 01 0A 01
    07  01  01 00 4A 74 B5 00 02 0E 80 FF FF
    08  01  01 00 02 41 FF
    FF 01 00 02 A1 A2 00 02 B1 B2  94"""

HEARTBEAT_2016 = "23 23 07 FE <VIN> 01 00 00 C8"


def packet(text):
    vin = " ".join(f"{b:02X}" for b in VIN.encode())
    return bytes(int(b, 16) for b in text.replace("<VIN>", vin).split())


def seed(name, stream, sizes=()):
    HERE.mkdir(parents=True, exist_ok=True)
    (HERE / name).write_bytes(bytes([len(sizes)]) + bytes(sizes) + stream)


r16, r25, hb = packet(REALTIME_2016), packet(REALTIME_2025), packet(HEARTBEAT_2016)
seed("realtime-2016.bin", r16)
seed("realtime-2025.bin", r25)
seed("heartbeat-2016.bin", hb)
seed("mixed-pieces.bin", hb + r16 + b"garbage##" + r25 + r16[:40], (1, 7, 30))
bad = bytearray(r16)
bad[-1] ^= 0xFF
seed("checksum-then-good.bin", bytes(bad) + r25, (25,))

# The ffi target's script: 6 bytes for the default monitor, then op 10 (decode) with a
# piece length and a finish flag, three times: the 2016 example cut in two, then a
# truncated start that `finish` reports.
FFI = pathlib.Path(__file__).parent / "corpus" / "ffi" / "gbt32960-pieces.bin"
FFI.write_bytes(
    bytes(6)
    + bytes([10, 40, 1]) + r16[:40]
    + bytes([10, len(r16) - 40, 1]) + r16[40:]
    + bytes([10, 10, 0]) + r16[:10]
)
