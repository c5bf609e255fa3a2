"""The HTTP service: ``create_app(settings)`` (``app``), its settings, the classify stages (``classify``), and
the layers below them: ``http`` (routes, errors, middleware, metrics), ``inputs`` (parsing, URL fetching,
decoding), ``batching`` (the batcher) and ``lifecycle`` (loaded versions and hot swaps)."""
