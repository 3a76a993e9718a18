#!/usr/bin/python3
"""Writes the seed corpora (corpus/<target>/*): small valid inputs for each
fuzz target, so the fuzzer starts from frames and values that pass the
first checks. Run again after changing the wire format."""
import ctypes
import ctypes.util
import os

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
_lz4 = ctypes.CDLL(ctypes.util.find_library("lz4"))


def lz4_frame(body):
    bound = _lz4.LZ4_compressBound(len(body))
    out = ctypes.create_string_buffer(bound)
    n = _lz4.LZ4_compress_default(body, out, len(body), bound)
    return b"\x01" + len(body).to_bytes(4, "big") + out.raw[:n]


def frame(t, fields, id_=7):
    body = msgpack.packb(dict({"v": 1, "t": t, "id": id_}, **fields), use_bin_type=True)
    return lz4_frame(body) if len(body) >= 4096 else b"\x00" + body


def key(i, s):  # the fuzz job's key: (int, text)
    k = b"\x10" + ((i ^ (1 << 63)) & ((1 << 64) - 1)).to_bytes(8, "big")
    return k + b"\x20" + s.encode().replace(b"\x00", b"\x00\xff") + b"\x00\x00"


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


REPLY, SPLIT, TREE, NODES, ROWS, FETCH = 10, 3, 4, 5, 6, 7
H = bytes(range(16))
write("msg", "hello", frame(1, {"dbs": ["old", "new"]}))
write("msg", "tree", frame(4, {"db": "old", "table": "t", "lo": [1, key(1, "a")], "hi": [0, None],
                              "tree": 9}))
write("msg", "error", frame(11, {"error": "no such table"}))
write("msg", "rows_lz4", frame(REPLY, {"rows": [[key(i, "r"), H] for i in range(200)]}))
write("msg", "status", frame(REPLY, {"state": "done", "rows": 5, "events": [b"\x00\x81\xa1x\x01"]}))

write("co_reply", "split", bytes([0]) + frame(REPLY, {"rows": 100, "bounds": [key(2, "a"), key(5, "q")]}))
write("co_reply", "tree", bytes([1]) + frame(REPLY, {"tree": 1, "rows": 100,
                                                      "nodes": [[2, 0, H, 100, key(8, "x")]]}))
write("co_reply", "tree_empty", bytes([1]) + frame(REPLY, {"tree": 1, "rows": 0, "nodes": []}))
write("co_reply", "nodes", bytes([2]) + frame(REPLY, {"tree": 1, "nodes": [
    [1, 10, H, 40, key(3, "c")], [1, 11, H, 60, key(7, "d")]]}))
write("co_reply", "rows", bytes([3]) + frame(REPLY, {"rows": [[key(i, "m"), H] for i in range(1, 9)]}))
write("co_reply", "fetch", bytes([4]) + frame(REPLY, {"rows": [
    [key(i, "b"), [b"\x10" + bytes(8), b"\x20v\x00\x00", b"\x20w"], ["x", None, "w"]]
    for i in (2, 3, 7)]}))
write("co_reply", "stream", bytes([5]) + frame(REPLY, {"more": 1, "rows": [
    [key(i, "s"), [b"\x10" + bytes(8), b"\x20v\x00\x00", [b"\x04", 70000, H]], ["x", None, "w"]]
    for i in (1, 4, 6)]}))

ENC = {"int_text": (1, 1, b"-9223372036854775808"), "numeric": (2, 1, b"10.50"),
       "float": (3, 4, bytes.fromhex("400921fb54442d18")), "bool": (4, 1, b"t"),
       "text_key": (5, 1, b"a\x00b"), "bytea": (6, 1, b"\\x00ff"), "date": (7, 1, b"2024-02-29"),
       "ts": (8, 5, bytes(8)), "tstz": (9, 1, b"2024-01-01 12:00:00+02"),
       "uuid": (10, 1, b"123e4567-e89b-12d3-a456-426614174000"),
       "json": (11, 1, b'{"b": [1, 2.50], "a": null}'), "dec": (2, 6, b"\x05123456")}
for name, (cls, kind, payload) in ENC.items():
    write("enc", name, bytes([cls, kind]) + payload)
write("enc", "key_int_text", bytes([4, 5]) + key(5, "k"))  # 2 columns: int, text

# pgrepl: replication messages, each with a 2-byte length (fuzz_pgrepl.c)
W = b"w" + bytes(24)


def tup(*vals):  # a TupleData of text values (None: NULL)
    out = len(vals).to_bytes(2, "big")
    for v in vals:
        out += b"n" if v is None else b"t" + len(v).to_bytes(4, "big") + v
    return out


def msgs(*ms):
    return b"".join(len(m).to_bytes(2, "big") + m for m in ms)


REL = (16384).to_bytes(4, "big")
write("pgrepl", "insert_commit", msgs(W + b"I" + REL + b"N" + tup(b"1", b"x", b"k"),
                                      W + b"C\x00" + (1 << 32).to_bytes(8, "big") + bytes(16)))
write("pgrepl", "update_key", msgs(W + b"U" + REL + b"K" + tup(b"1", None, b"k") + b"N"
                                   + tup(b"2", b"y", b"k")))
write("pgrepl", "delete_truncate", msgs(W + b"D" + REL + b"O" + tup(b"1", b"x", b"k"),
                                        W + b"T" + (1).to_bytes(4, "big") + b"\x00" + REL))
write("pgrepl", "relation_keepalive", msgs(
    W + b"R" + (5).to_bytes(4, "big") + b"s\x00t2\x00f" + (1).to_bytes(2, "big")
    + b"\x01id\x00" + bytes(8),
    b"k" + bytes(16) + b"\x01",
    W + b"Y" + bytes(4) + b"s\x00ty\x00", W + b"O" + bytes(8) + b"o\x00"))
