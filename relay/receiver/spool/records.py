"""Spool records: the pure encoding and decoding of one spooled event (no files opened here).

A record is  b"RSP1" | u32 length | u32 CRC32(payload) | payload,  with payload
u32 meta length | orjson meta (every Event field but the body, plus the dedupe window) | body.
Raw body bytes keep the round trip byte-exact without base64. A record cut short by a crash, or
damaged, fails its length or CRC check: the reader skips to the next magic whose record checks
out and reports the bytes it passed over; it never raises on bad data.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from relay.store.records import Event

MAGIC = b"RSP1"
_HEADER = struct.Struct(">4sII")  # magic, payload length, CRC32 of the payload
_META_LEN = struct.Struct(">I")
_SCAN_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class SpooledEvent:
    """One spooled event and the dedupe window its source asked for at intake."""

    event: Event
    dedupe_window: float = 0.0


def encode_record(record: SpooledEvent) -> bytes:
    """The bytes of one record: header, metadata and the body unchanged."""
    event = record.event
    meta = orjson.dumps(
        {
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "received_at": event.received_at,
            "content_type": event.content_type,
            "method": event.method,
            "headers": event.headers,
            "targets": event.targets,
            "dedupe_key": event.dedupe_key,
            "dedupe_window": record.dedupe_window,
            "order": event.order,
        }
    )
    payload = b"".join((_META_LEN.pack(len(meta)), meta, event.body))
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> SpooledEvent:
    """The record a checked payload holds; ValueError when it is not one."""
    try:
        (meta_len,) = _META_LEN.unpack_from(payload)
        start = _META_LEN.size
        if start + meta_len > len(payload):
            raise ValueError("metadata longer than the record")
        meta = orjson.loads(payload[start : start + meta_len])
        event_type = meta["type"]
        event = Event(
            id=str(meta["id"]),
            source=str(meta["source"]),
            type=None if event_type is None else str(event_type),
            received_at=float(meta["received_at"]),
            content_type=str(meta["content_type"]),
            method=str(meta["method"]),
            headers=tuple((str(k), str(v)) for k, v in meta["headers"]),
            body=payload[start + meta_len :],
            targets=tuple(str(t) for t in meta["targets"]),
            dedupe_key=str(meta["dedupe_key"]),
            # Absent from records spooled by a version without FIFO per key: unordered.
            order=tuple(str(k) for k in meta.get("order", ())),
        )
        return SpooledEvent(event, float(meta["dedupe_window"]))
    except (struct.error, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a spool record: {exc}") from exc


def _record_at(f: BinaryIO, pos: int, end: int) -> tuple[SpooledEvent, int] | None:
    """The record starting at `pos` and where it ends, or None when none checks out there."""
    f.seek(pos)
    header = f.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    magic, length, crc = _HEADER.unpack(header)
    stop = pos + _HEADER.size + length
    if magic != MAGIC or stop > end:
        return None
    payload = f.read(length)
    if len(payload) != length or zlib.crc32(payload) != crc:
        return None
    try:
        return decode_payload(payload), stop
    except ValueError:
        return None


def _next_magic(f: BinaryIO, pos: int, end: int) -> int:
    """Offset of the next MAGIC at or after `pos` (before `end`), or `end`."""
    overlap = len(MAGIC) - 1
    while pos < end:
        f.seek(pos)
        chunk = f.read(min(_SCAN_CHUNK, end - pos))
        if not chunk:
            break
        found = chunk.find(MAGIC)
        if found >= 0:
            return pos + found
        if len(chunk) <= overlap:
            break
        pos += len(chunk) - overlap
    return end


def read_records(
    f: BinaryIO, start: int, end: int, max_records: int, max_bytes: int
) -> tuple[list[SpooledEvent], int, int]:
    """Records of `f` from `start` up to `end`: (records, where reading stopped, bytes skipped)."""
    records: list[SpooledEvent] = []
    pos, skipped, size = start, 0, 0
    while pos < end and len(records) < max_records and size < max_bytes:
        found = _record_at(f, pos, end)
        if found is not None:
            record, stop = found
            records.append(record)
            size += stop - pos
            pos = stop
            continue
        # Torn or damaged: resume at the next record that checks out (CRC), if any.
        resume = _next_magic(f, pos + 1, end)
        skipped += resume - pos
        pos = resume
    return records, pos, skipped


# ---------------------------------------------------------------------------------------------
# Small durable-file helpers
