"""The shared kernel: errors, units, times, ids, secrets, logging, signing, metrics."""
