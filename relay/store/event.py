"""The event record's import path for modules not yet reading it from relay.store.records."""

from relay.store.records import EVENT_FIELDS, Event

__all__ = ["EVENT_FIELDS", "Event"]
