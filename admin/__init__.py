"""The ``vitserve`` command line: thin commands over the packages below it. Nothing imports it."""
