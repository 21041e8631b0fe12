"""Compressed request bodies for the decoding tests: raw deflate, and gzip bombs of zeros."""

from __future__ import annotations

import zlib


def raw_deflate(data: bytes) -> bytes:
    """`data` as a raw deflate stream (no zlib header), as some clients send `deflate`."""
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def zeros_gzip(size: int) -> bytes:
    """A gzip of `size` zero bytes, compressed a MiB at a time (never `size` bytes in memory)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    parts = [packer.compress(block) for _ in range(size // len(block))]
    return b"".join(parts) + packer.flush()
