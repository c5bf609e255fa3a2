"""The HTTP layer: routes, request and response bodies, error mapping, middleware and metrics."""
