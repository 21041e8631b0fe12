"""`relay dev`: everything in one command for a first run."""
