"""The web pages: a classify page at ``/`` and a models page at ``/ui/models``, static files from ``static/``."""
