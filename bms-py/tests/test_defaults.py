"""Every default of the Python API comes from the core, and the command line has the same
ones: the defaults shown by `bms <command> --help` equal `bms._bms.DEFAULTS`."""

import inspect
import re
import subprocess

import bms

D = bms._bms.DEFAULTS


def _help_defaults(bms_bin, command):
    text = subprocess.run([bms_bin, command, "--help"], capture_output=True, text=True,
                          check=True).stdout
    out = {}
    flag = None
    for line in text.splitlines():
        m = re.match(r"\s+(?:-\w, )?--([\w-]+)", line)
        if m:
            flag = m.group(1)
        d = re.search(r"\[default: ([^\]]+)\]", line)
        if d and flag:
            out[flag] = d.group(1)
    return out


def _signature_defaults(f):
    return {k: p.default for k, p in inspect.signature(f).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_python_signatures_take_the_cores_defaults():
    for f in (bms.frame_features, bms.daily):
        d = _signature_defaults(f)
        assert d["alarm_spread_v"] == D["alarm_spread_v"]
        assert d["ocv"] == D["ocv"]
    w = _signature_defaults(bms.windows)
    for k in ("context", "horizon", "fill", "full_horizon"):
        assert w[k] == D[k], k
    assert D["batch_width"] == D["context"] * len(D["features"])
    assert list(D["features"]) == list(bms.REFERENCE_COLUMNS)
    assert _signature_defaults(bms.read_batch_csv)["width"] == D["batch_width"]
    s = _signature_defaults(bms.simulate)
    for k, v in D["simulate"].items():
        assert s[k] == v, k


def test_the_command_line_has_the_same_defaults(bms_bin):
    daily = _help_defaults(bms_bin, "daily")
    assert float(daily["alarm-spread-v"]) == D["alarm_spread_v"]
    assert daily["ocv"] == D["ocv"]
    assert daily["utc-offset"] == D["utc_offset"]
    win = _help_defaults(bms_bin, "windows")
    assert int(win["context"]) == D["context"]
    assert int(win["horizon"]) == D["horizon"]
    assert float(win["fill"]) == D["fill"]
    sim = _help_defaults(bms_bin, "simulate")
    S = D["simulate"]
    for flag, key, conv in [("vehicles", "vehicles", int), ("days", "days", int),
                            ("seed", "seed", int), ("start", "start", str),
                            ("cells", "cells", int), ("probes", "probes", int),
                            ("chemistry", "chemistry", str),
                            ("weak-fraction", "weak_fraction", float)]:
        assert conv(sim[flag]) == S[key], flag
    assert sim["interval"] == f"{S['interval_ms'] // 1000}s"
    pred = _help_defaults(bms_bin, "predict")
    assert pred["utc-offset"] == D["utc_offset"] and pred["ocv"] == D["ocv"]
