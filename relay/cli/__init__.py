"""The `relay` console script: one module per command group."""
