"""Chaos suite: real processes, injected faults, exact reconciliation (run apart: -m slow)."""
