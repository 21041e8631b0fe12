"""Clients of providers' own APIs, for what an operator sets up there (`relay subscribe`)."""
