"""Issue 25, classes 3 and 7, and issue 29's reader API: one bounded formatter for every value the
reader can build, every message escaped and at most 4000 characters, structured
``CheckpointError`` fields, and limits passed per call. The reader package is loaded alone."""
import collections
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile

import numpy as np
import pytest
from reader_pkg import DIRECTORY, LOAD_READER, load_reader

tp = load_reader(DIRECTORY, "_messages_reader")
from _messages_reader import errors, limits  # noqa: E402

MAX_MESSAGE = 4000
HOSTILE_TEXT = "a\x1b[2J\x07\r\x00\u202e\ud800z"


def _pt(path, value, proto=2):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(value, protocol=proto))
    return str(path)


def _dag(levels):
    node = ()
    for _ in range(levels):
        node = (node, node)  # 2**levels leaves once expanded
    return node


# --- the formatter --------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    _dag(40), collections.OrderedDict(a=_dag(40)), {"k": [_dag(40)] * 1000}, b"\x00" * (100 << 20),
    "k" * (50 << 20), 1 << 100000, list(range(1_000_000)), collections.OrderedDict((str(i), i) for i in range(10**6)),
    bytearray(b"x" * 10**7), 1.5 + 2j, np.zeros((3, 4), np.float32), object(),
], ids=["dag", "ordered_dag", "dict_of_dags", "100MB_bytes", "50MB_str", "huge_int", "long_list", "big_ordered",
        "bytearray", "complex", "ndarray", "object"])
def test_the_formatter_is_bounded_for_every_type(value):
    start = time.perf_counter()
    text = errors.fmt(value)
    assert time.perf_counter() - start < 0.5
    assert len(text) <= 200 and text.isprintable()


def test_the_formatter_escapes_control_characters_and_surrogates():
    text = errors.fmt({HOSTILE_TEXT: HOSTILE_TEXT.encode("utf-8", "surrogatepass")})
    assert "\x1b" not in text and "\ud800" not in text and "\u202e" not in text and "\r" not in text
    assert "\\x1b" in text and "\\ud800" in text and "\\u202e" in text
    text.encode("utf-8")  # printable anywhere
    assert errors.clip(HOSTILE_TEXT) == "a\\x1b[2J\\x07\\x0d\\x00\\u202e\\ud800z"
    # A whole message keeps its line breaks and nothing else.
    assert errors.clip_message("one\ntwo\x1b") == "one\ntwo\\x1b"


def test_clip_looks_at_a_bounded_prefix_only():
    huge = "\x00" * (64 << 20)
    start = time.perf_counter()
    for _ in range(100):
        assert len(errors.clip(huge, 120)) <= 120
    assert time.perf_counter() - start < 1


def test_a_message_is_at_most_4000_characters_at_and_past_the_bound():
    assert limits.Limits().max_message == MAX_MESSAGE
    assert errors.clip_message("x" * MAX_MESSAGE) == "x" * MAX_MESSAGE
    past = errors.clip_message("x" * (MAX_MESSAGE + 1))
    assert len(past) == MAX_MESSAGE and past.endswith("more characters]")
    # Escaping can lengthen a message: the bound holds after escaping.
    assert len(errors.clip_message("\x00" * MAX_MESSAGE)) == MAX_MESSAGE


# --- messages of the readers ----------------------------------------------------------------------

def test_keys_with_control_characters_are_escaped_in_reader_messages(tmp_path):
    path = _pt(tmp_path / "keys.pt", {HOSTILE_TEXT: 1.5, (1, 2): 2})
    with pytest.raises(tp.CheckpointError) as info:
        tp.read_torch_zip(path)
    message = str(info.value)
    assert info.value.rule == "pickle.dict_key" and message.isprintable() and len(message) <= MAX_MESSAGE


def test_a_path_with_control_characters_is_escaped_and_bounded(tmp_path):
    name = "evil\x1b[31m" + "p" * 200 + ".pt"
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(b"PK" + bytes(30))
    with pytest.raises(tp.CheckpointError) as info:
        tp.read_torch_zip(path)
    assert info.value.path == path and "\x1b" not in str(info.value) and "\\x1b[31m" in str(info.value)
    # An OSError quotes the path bounded too, whatever its length (ENAMETOOLONG, ENOENT).
    for missing in (str(tmp_path / ("q" * 250)) + "/" + "r" * 4000 + "\x07", str(tmp_path / "absent\x07.pt")):
        with pytest.raises(OSError) as info:
            tp.read_torch_zip(missing)
        assert len(str(info.value)) <= 400 and "\x07" not in str(info.value) and info.value.errno in (2, 36)


def test_a_deep_dag_in_an_ordered_dict_fails_fast_on_every_error_path(tmp_path):
    # Issue 25: a 1.2 KB file holding a 40-level tuple DAG inside an OrderedDict hung six error paths.
    value = collections.OrderedDict(w=_dag(40))
    pkl = pickle.dumps(value, protocol=2)
    assert len(pkl) < 2000
    start = time.perf_counter()
    got = tp.read_torch_zip(_pt(tmp_path / "dag.pt", value))  # a value, not a key: it loads, shared
    assert time.perf_counter() - start < 2 and got["w"][0] is got["w"][1]
    # As a dict key (of a dict or an OrderedDict): refused at once, the message bounded. The
    # pickles are written by hand: building such a dict in Python would hash the DAG, which takes
    # 2**40 steps (tuple hashes are not cached).
    key = b")q\x00" + b"".join(b"h%c\x86q%c" % (i, i + 1) for i in range(40))  # (node, node), 40 times
    for head in (b"}", b"ccollections\nOrderedDict\n)R"):
        path = tmp_path / "dagkey.pt"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", b"\x80\x02" + head + key + b"K\x01s.")
        start = time.perf_counter()
        with pytest.raises(tp.CheckpointError) as info:
            tp.read_torch_zip(str(path))
        assert time.perf_counter() - start < 2
        assert info.value.rule == "pickle.dict_key" and len(str(info.value)) <= 600


def test_large_bytes_values_are_never_formatted_whole(tmp_path):
    # Issue 25: 600 large bytes values grew RSS by 935 MB through reprlib.
    child = LOAD_READER + textwrap.dedent("""
        import sys
        tp = load_reader(sys.argv[1], "_r")
        from _r import errors
        values = [bytes([i % 256]) * (1 << 20) for i in range(600)]
        def hwm():
            with open("/proc/self/status") as f:
                return int(next(l for l in f if l.startswith("VmHWM:")).split()[1]) // 1024
        base = hwm()
        text = errors.fmt({"k%d" % i: v for i, v in enumerate(values)})
        err = errors.error("f.pt", "a value is " + errors.fmt(values), "x")
        print(hwm() - base, len(text), len(str(err)))
    """)
    done = subprocess.run([sys.executable, "-c", child, DIRECTORY], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    grown, text_len, message_len = map(int, done.stdout.split())
    assert grown < 16 and text_len <= 200 and message_len <= 300


# --- CheckpointError: structured, and shown under the package's name -------------------------------

def test_checkpoint_error_has_path_reason_and_rule(tmp_path):
    path = _pt(tmp_path / "r.pt", {"a": 1})
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 1)
    with pytest.raises(tp.CheckpointError) as info:
        tp.read_torch_zip(path)
    err = info.value
    assert err.path == path and err.rule == "zip.eocd" and str(err) == f"{path}: {err.reason}"
    assert type(err).__module__ == "ms_weightnorm" and type(err).__qualname__ == "CheckpointError"
    assert tp.UnsafeCheckpointError.__module__ == "ms_weightnorm"
    again = err.__reduce__()[0](*err.__reduce__()[1])
    assert (type(again), again.path, again.reason, again.rule, str(again)) == (type(err), err.path, err.reason,
                                                                               err.rule, str(err))


# --- limits: per call, not module globals ---------------------------------------------------------

def test_limits_are_passed_per_call_and_per_block(tmp_path):
    deep = _pt(tmp_path / "deep.pt", [[[[[1]]]]])
    assert tp.read_torch_zip(deep) == [[[[[1]]]]]
    with pytest.raises(tp.CheckpointError) as info:
        tp.read_torch_zip(deep, limits=tp.Limits(max_depth=4))
    assert info.value.rule == "pickle.depth"
    with limits.limits(max_depth=4):
        with pytest.raises(tp.CheckpointError):
            tp.read_torch_zip(deep)
        assert limits.current().max_depth == 4
    assert limits.current().max_depth == 100 and tp.read_torch_zip(deep) == [[[[[1]]]]]
    with pytest.raises(Exception):
        limits.current().max_depth = 1  # frozen
    # The old upper-case names are the defaults, readable.
    assert limits.MAX_DEPTH == 100 and limits.MAX_MESSAGE == 4000


def test_limits_of_one_thread_do_not_leak_into_another(tmp_path):
    deep = _pt(tmp_path / "deep.pt", [[[[[1]]]]])
    seen = {}
    inside, release = threading.Event(), threading.Event()

    def other():
        inside.wait()
        try:
            seen["other"] = tp.read_torch_zip(deep)
        except tp.CheckpointError as err:
            seen["other"] = err.rule
        release.set()

    thread = threading.Thread(target=other)
    thread.start()
    with limits.limits(max_depth=4):
        inside.set()
        release.wait(30)
    thread.join()
    assert seen["other"] == [[[[[1]]]]]


def test_no_module_class_swap_remains():
    src = open(os.path.join(os.path.dirname(DIRECTORY), "_torch_pickle.py")).read()
    assert "__class__" not in src
