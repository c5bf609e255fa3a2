"""Observability: request ids and per-request records, JSON logs, OpenTelemetry traces, per-version metrics."""
