"""Operator views and actions on the store: status, events, dead letters, replay, the status page."""
