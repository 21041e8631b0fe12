"""Test support: a real redis-server per session, processes and loopback targets."""
