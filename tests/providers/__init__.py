"""Provider conformance: each provider's documented payloads, end to end, through relay."""
