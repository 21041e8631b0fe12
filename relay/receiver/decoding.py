"""Request bodies sent with a `Content-Encoding`, decoded by relay itself as they arrive.

aiohttp's own decoding (`auto_decompress`) inflates a body in the protocol, before any handler
runs, and drains it again after refusing the request: 16 gzip bombs to a wrong token stalled
every other request for seconds. So the receiver's server runs with it off
(`relay.receiver.app.SERVER_OPTIONS`) and the hook handler decodes here, one chunk at a time,
counting the decoded size against the source's `max_body` as it goes: a 1 MB gzip of 1 GiB of zeros
costs at most `max_body` plus one step of output, and is refused (413) as soon as it passes.

Codings (RFC 9110 §8.4.1, https://www.rfc-editor.org/rfc/rfc9110#section-8.4.1):
- `gzip` (and its alias `x-gzip`), RFC 1952, several members in a row included (§2.2);
- `deflate`: the zlib format (RFC 1950) the RFC names, or raw deflate (RFC 1951) as some
  senders write it; told apart by the zlib header, as browsers and curl do;
- `identity` means no coding and is always taken.
Stacked codings (`gzip, gzip`) are refused with 415: no provider sends them, and decoding them
would need a bounded buffer per layer for nothing. `br` and `zstd` would need a dependency.

Pure and synchronous: the aiohttp handler feeds it what the socket gives, `relay check` a file.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from relay.core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from relay.core.headers import IDENTITY, Coding

#: RFC 9110 §8.4.1.3: a recipient SHOULD treat x-gzip as gzip.
_ALIASES = {"x-gzip": Coding.GZIP}
#: Most decoded bytes one zlib call may produce: what is in memory beyond the body kept.
DECODE_STEP = 64 * 1024
#: How far the body as sent may exceed the limit: gzip's header and trailer, and the 5 bytes per
#: stored block that incompressible data costs, so a body that fits decoded is never refused
#: for its coding (2 KiB covers a 16 MiB body stored uncompressed).
ENCODED_SLACK = 2048
#: Longest part of a refused Content-Encoding header quoted back in the error message.
_QUOTED = 40

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_WBITS = -zlib.MAX_WBITS


def codings_named(header: str) -> list[str]:
    """The codings a Content-Encoding value names, lower-cased, `identity` and blanks left out."""
    names = (name.strip().lower() for name in header.split(","))
    return [name for name in names if name and name != IDENTITY]


def accepted_coding(header: str, allowed: Iterable[Coding]) -> Coding | None:
    """The one coding a Content-Encoding header names (None: no coding); 415 when not taken."""
    names = codings_named(header)
    if not names:
        return None
    allowed = tuple(allowed)
    takes = (
        f"this source takes {', '.join(allowed)} or an uncompressed body"
        if allowed
        else "this source takes uncompressed bodies only"
    )
    if len(names) > 1:
        raise UnsupportedMediaType(
            f"several content codings ({header[:_QUOTED]!r}) are not supported; {takes}"
        )
    name = _ALIASES.get(names[0], names[0])
    if name not in allowed:
        raise UnsupportedMediaType(f"Content-Encoding {name[:_QUOTED]!r} is not taken; {takes}")
    return Coding(name)


def _is_zlib_header(head: bytes) -> bool:
    """Whether two bytes open a zlib stream (RFC 1950 §2.2: deflate method, FCHECK)."""
    return head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0


class BodyDecoder:
    """Decodes one request body fed in chunks, within `limit` bytes encoded and decoded.

    `feed` raises 413 (PayloadTooLarge) as soon as either size passes `limit` and 400
    (BadRequest) for data that does not decode; `finish` raises 400 for a stream cut short and
    returns the decoded body.
    """

    def __init__(self, coding: Coding, limit: int) -> None:
        self.coding = coding
        self.limit = limit
        self.encoded_limit = limit + ENCODED_SLACK
        self.encoded_size = 0
        self.size = 0
        self._parts: list[bytes] = []
        self._head = b""  # deflate: the first bytes, until there are two to tell zlib from raw
        self._inflate: zlib._Decompress | None = None

    def feed(self, data: bytes) -> None:
        """Decode the next chunk of the body as sent."""
        self.encoded_size += len(data)
        if self.encoded_size > self.encoded_limit:
            raise PayloadTooLarge(
                f"the compressed body is over {self.encoded_limit} bytes; "
                f"this source takes at most {self.limit} bytes decoded"
            )
        if self._inflate is None:
            self._head += data
            if self.coding is Coding.DEFLATE and len(self._head) < 2:
                return
            data, self._head = self._head, b""
            self._inflate = zlib.decompressobj(self._wbits(data))
        self._decode(self._inflate, data)

    def _wbits(self, head: bytes) -> int:
        if self.coding is Coding.GZIP:
            return _GZIP_WBITS
        return _ZLIB_WBITS if _is_zlib_header(head) else _RAW_WBITS

    def _decode(self, inflate: zlib._Decompress, data: bytes) -> None:
        while True:
            if inflate.eof:
                if not data:
                    return
                if self.coding is not Coding.GZIP:
                    raise BadRequest("the deflate body has bytes after its end")
                # RFC 1952 §2.2: a gzip body may be several members one after the other.
                inflate = self._inflate = zlib.decompressobj(_GZIP_WBITS)
            left = self.limit - self.size
            # At most one step, and never more than one byte past the limit: that byte says
            # "too large" without inflating the rest.
            step = min(DECODE_STEP, left + 1)
            try:
                out = inflate.decompress(data, step)
            except zlib.error as exc:
                raise BadRequest(f"the {self.coding} body does not decode: {exc}") from None
            if len(out) > left:
                raise PayloadTooLarge(
                    f"the body decodes to over {self.limit} bytes, the most this source takes"
                )
            if out:
                self.size += len(out)
                self._parts.append(out)
            if inflate.eof:
                data = inflate.unused_data
                if not data:
                    return
            else:
                data = inflate.unconsumed_tail
                # A full step may leave output inside zlib even with no input left: ask again.
                if not data and len(out) < step:
                    return

    def finish(self) -> bytes:
        """The decoded body, once every chunk was fed; 400 when the stream is cut short."""
        if self._inflate is None:
            if self._head:
                raise BadRequest(f"the {self.coding} body ends before its header does")
            return b""  # an empty body: there was nothing to encode
        if not self._inflate.eof:
            raise BadRequest(f"the {self.coding} body is cut short (its stream has no end)")
        return b"".join(self._parts)


def decode_body(coding: Coding, body: bytes, limit: int) -> bytes:
    """A whole encoded body decoded (413/400 as `BodyDecoder` says): `relay check`'s dry run."""
    decoder = BodyDecoder(coding, limit)
    for at in range(0, len(body), DECODE_STEP):
        decoder.feed(body[at : at + DECODE_STEP])
    return decoder.finish()
