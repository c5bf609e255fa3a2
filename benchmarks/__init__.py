"""Benchmarks: engine throughput side by side with peer runtimes, and end-to-end HTTP latency.

``vitserve bench`` runs them; each module also runs alone (``python -m vitserve.benchmarks.engine_bench --quick``).
"""
