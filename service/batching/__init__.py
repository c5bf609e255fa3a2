"""Dynamic batching: many concurrent callers, one engine call per batch."""
