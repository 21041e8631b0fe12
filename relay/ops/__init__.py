"""Operator views and actions on the store: status, events, dead letters, replay, status page."""
