"""The wire, as tests that stand in for a coordinator or a worker speak it
(proto/README.md): one frame a message, a flag byte (0: msgpack; 1: lz4,
the raw size next, 4 bytes big-endian) and the body; and the canonical
encoding of an integer key (merkle/README.md)."""
import ctypes
import ctypes.util

import msgpack

_lz4 = ctypes.CDLL(ctypes.util.find_library("lz4"))


def lz4(b):
    """b compressed as an lz4 block."""
    bound = _lz4.LZ4_compressBound(len(b))
    out = ctypes.create_string_buffer(bound)
    n = _lz4.LZ4_compress_default(b, out, len(b), bound)
    return out.raw[:n]


def unlz4(b, raw):
    """An lz4 block of raw bytes, decompressed (fewer when it is broken)."""
    out = ctypes.create_string_buffer(raw)
    n = _lz4.LZ4_decompress_safe(b, out, len(b), raw)
    return out.raw[:max(n, 0)]


def decode(frame):
    """A frame's message (an lz4 frame that does not decompress fails)."""
    if frame[0] == 1:
        raw = int.from_bytes(frame[1:5], "big")
        body = unlz4(frame[5:], raw)
        assert len(body) == raw, "an lz4 frame that does not decompress"
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    return msgpack.unpackb(frame[1:], raw=False, strict_map_key=False)


def encode(m):
    """A message as an uncompressed frame."""
    return b"\x00" + msgpack.packb(m, use_bin_type=True)


def int_key(i):
    """The canonical key of one integer column."""
    return b"\x10" + ((i ^ (1 << 63)) & ((1 << 64) - 1)).to_bytes(8, "big")


def key_int(k):
    """int_key's inverse."""
    u = int.from_bytes(k[1:9], "big") ^ (1 << 63)
    return u - (1 << 64) if u >= 1 << 63 else u
