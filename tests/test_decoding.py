"""relay.receiver.decoding: bounded, chunk-by-chunk decoding of gzip and deflate request bodies."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from relay.core.headers import SUPPORTED, Coding
from relay.receiver.decoding import (
    DECODE_STEP,
    BodyDecoder,
    accepted_coding,
    codings_named,
    decode_body,
)
from tests.support.compressed import raw_deflate, zeros_gzip

ENCODERS = {
    "gzip": (Coding.GZIP, gzip.compress),
    "zlib": (Coding.DEFLATE, zlib.compress),
    "raw deflate": (Coding.DEFLATE, raw_deflate),
}


def feed_in(decoder: BodyDecoder, data: bytes, sizes: list[int]) -> bytes:
    """Feed `data` in chunks of the given sizes (the rest in one), then finish."""
    at = 0
    for size in sizes:
        decoder.feed(data[at : at + size])
        at += size
    decoder.feed(data[at:])
    return decoder.finish()


# ---------------------------------------------------------------------------------------------
# Round trips


@given(
    body=st.binary(max_size=20_000) | st.text(max_size=5_000).map(str.encode),
    form=st.sampled_from(sorted(ENCODERS)),
    sizes=st.lists(st.integers(0, 300), max_size=20),
)
def test_any_split_decodes_to_the_body(body: bytes, form: str, sizes: list[int]) -> None:
    coding, encode = ENCODERS[form]
    decoder = BodyDecoder(coding, limit=len(body) + 64)
    assert feed_in(decoder, encode(body), sizes) == body
    assert decoder.size == len(body)


@given(body=st.binary(min_size=1, max_size=5_000), members=st.integers(2, 4))
def test_gzip_members_one_after_the_other(body: bytes, members: int) -> None:
    # RFC 1952 §2.2: a gzip file is a series of members (what `cat a.gz b.gz` makes).
    packed = b"".join(gzip.compress(body) for _ in range(members))
    assert decode_body(Coding.GZIP, packed, limit=len(body) * members) == body * members


@given(body=st.binary(max_size=5_000), extra=st.integers(1, 100))
def test_limit_is_exact(body: bytes, extra: int) -> None:
    assert decode_body(Coding.GZIP, gzip.compress(body), limit=len(body)) == body
    if body:
        with pytest.raises(PayloadTooLarge):
            decode_body(Coding.GZIP, gzip.compress(body + bytes(extra)), limit=len(body))


def test_an_empty_body_is_empty() -> None:
    assert decode_body(Coding.GZIP, b"", limit=10) == b""
    assert decode_body(Coding.DEFLATE, b"", limit=10) == b""


def test_one_byte_at_a_time_tells_zlib_from_raw_deflate() -> None:
    body = b'{"event": "x"}' * 50
    for packed in (zlib.compress(body), raw_deflate(body)):
        decoder = BodyDecoder(Coding.DEFLATE, limit=len(body))
        assert feed_in(decoder, packed, [1] * len(packed)) == body


# ---------------------------------------------------------------------------------------------
# Bombs: refused as soon as the decoded size passes the limit, never inflated whole


class Spy:
    """Wraps a zlib decompressor and records what each call returned."""

    def __init__(self, inner: zlib._Decompress, calls: list[tuple[int, int]]) -> None:
        self.inner = inner
        self.calls = calls

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        out = self.inner.decompress(data, max_length)
        self.calls.append((max_length, len(out)))
        return out

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_gzip_bomb_is_refused_within_limit_plus_one_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bomb = zeros_gzip(256 * 1024 * 1024)  # 256 MiB of zeros in ~250 KB
    assert len(bomb) < 300_000
    limit = 1024 * 1024
    calls: list[tuple[int, int]] = []
    real = zlib.decompressobj
    monkeypatch.setattr(
        "relay.receiver.decoding.zlib.decompressobj", lambda *a: Spy(real(*a), calls)
    )
    decoder = BodyDecoder(Coding.GZIP, limit)
    chunks = [bomb[at : at + 16 * 1024] for at in range(0, len(bomb), 16 * 1024)]
    # Refused in the first chunk: 1 MiB of zeros is ~1 KB of gzip.
    with pytest.raises(PayloadTooLarge, match="decodes to over 1048576 bytes"):
        decoder.feed(chunks[0])
    assert decoder.encoded_size == 16 * 1024
    # What was kept stays within the limit, and no call returned more than one step.
    assert decoder.size <= limit
    assert all(length <= max_length <= DECODE_STEP for max_length, length in calls)
    assert sum(length for _, length in calls) <= limit + 1


def test_the_compressed_size_is_bounded_too() -> None:
    noise = bytes(range(256)) * 64  # 16 KiB stored as is (level 0)
    decoder = BodyDecoder(Coding.GZIP, limit=1000)
    with pytest.raises(PayloadTooLarge, match="compressed body is over 3048 bytes"):
        decoder.feed(gzip.compress(noise, compresslevel=0))


@given(body=st.binary(max_size=70_000))
def test_a_body_that_fits_is_never_refused_for_its_coding(body: bytes) -> None:
    # Stored (level 0) is the largest a coding makes a body: header, trailer, block headers.
    for packed in (gzip.compress(body, compresslevel=0), zlib.compress(body, 0)):
        coding = Coding.GZIP if packed[:2] == b"\x1f\x8b" else Coding.DEFLATE
        assert decode_body(coding, packed, limit=len(body)) == body


# ---------------------------------------------------------------------------------------------
# Corrupt and cut-short streams: 400


# The gzip data of a parametrization has mtime=0: bytes with a timestamp in them make test ids
# that differ between pytest-xdist's workers, which must all collect the same tests.
@pytest.mark.parametrize(
    ("coding", "data"),
    [
        (Coding.GZIP, b"this is not gzip at all"),
        (Coding.GZIP, gzip.compress(b"x" * 100, mtime=0)[:10] + b"\xff" * 20),
        (Coding.DEFLATE, b"\xff\xff\xff\xff not deflate"),
        (Coding.GZIP, gzip.compress(b"ok", mtime=0) + b"trailing garbage"),
        (Coding.DEFLATE, zlib.compress(b"ok") + b"more"),
    ],
)
def test_corrupt_data_is_a_400(coding: Coding, data: bytes) -> None:
    with pytest.raises(BadRequest, match=r"does not decode|after its end"):
        decode_body(coding, data, limit=10_000)


@pytest.mark.parametrize(
    ("coding", "packed"),
    [
        (Coding.GZIP, gzip.compress(b"a whole body" * 20, mtime=0)[:-8]),  # no trailer
        (Coding.GZIP, gzip.compress(b"a whole body" * 20, mtime=0)[:15]),
        (Coding.DEFLATE, zlib.compress(b"a whole body" * 20)[:-4]),
        (Coding.DEFLATE, b"\x78"),  # one byte: not even the zlib header
    ],
)
def test_a_truncated_stream_is_a_400(coding: Coding, packed: bytes) -> None:
    decoder = BodyDecoder(coding, limit=10_000)
    decoder.feed(packed)
    with pytest.raises(BadRequest, match=r"cut short|before its header"):
        decoder.finish()


# ---------------------------------------------------------------------------------------------
# Which codings a source takes: 415 naming what it does take


def test_identity_and_no_coding_mean_the_body_as_is() -> None:
    assert accepted_coding("identity", SUPPORTED) is None
    assert accepted_coding(" Identity , ", ()) is None
    assert codings_named("") == []


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        ("gzip", Coding.GZIP),
        ("GZIP", Coding.GZIP),
        ("x-gzip", Coding.GZIP),
        ("deflate", Coding.DEFLATE),
        ("identity, gzip", Coding.GZIP),
    ],
)
def test_supported_codings_are_taken(header: str, coding: Coding) -> None:
    assert accepted_coding(header, SUPPORTED) is coding


@pytest.mark.parametrize("header", ["br", "zstd", "compress", "x-unknown"])
def test_other_codings_are_415_naming_the_supported_ones(header: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        accepted_coding(header, SUPPORTED)
    assert f"'{header}' is not taken" in caught.value.message
    assert "gzip, deflate" in caught.value.message


def test_stacked_codings_are_refused() -> None:
    with pytest.raises(UnsupportedMediaType, match="several content codings"):
        accepted_coding("gzip, gzip", SUPPORTED)


def test_a_source_may_take_no_coding_or_only_some() -> None:
    with pytest.raises(UnsupportedMediaType, match="uncompressed bodies only"):
        accepted_coding("gzip", ())
    with pytest.raises(UnsupportedMediaType, match="takes deflate or an uncompressed body"):
        accepted_coding("gzip", (Coding.DEFLATE,))
