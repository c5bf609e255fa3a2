"""`vitserve models canary|promote|abort` and the lease-aware delete/gc, in-process against a real store."""

from __future__ import annotations

from tests.tiny import publish_tiny
from vitserve.admin.errors import EXIT_NOT_FOUND, EXIT_REFUSED
from vitserve.admin.main import main
from vitserve.model_store import ModelStore


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_canary_then_promote_or_abort(store: ModelStore, capsys) -> None:
    publish_tiny(store, seed=0, aliases=("production",), metrics={"val": {"top1": 0.9}})
    publish_tiny(store, seed=1, metrics={"val": {"top1": 0.95}})
    s = ("--store", store.root)
    assert _run(capsys, "models", "canary", "tiny", *s)[1] == "tiny@production → 1; no canary\n"
    code, out, _ = _run(capsys, "models", "canary", "tiny", "2", "--weight", "10", *s)
    assert code == 0 and out == "tiny@production: canary 2 takes 10 % of requests\n"
    assert _run(capsys, "models", "canary", "tiny", *s)[1] == "tiny@production → 1 (90 %), canary 2 (10 %)\n"
    code, out, _ = _run(capsys, "models", "abort", "tiny", *s)
    assert code == 0 and out == "tiny@production: canary 2 aborted; all requests → 1\n"
    code, _, err = _run(capsys, "models", "abort", "tiny", *s)
    assert code == EXIT_NOT_FOUND and "has no canary" in err
    code, _, err = _run(capsys, "models", "canary", "tiny", "2", "--weight", "0", *s)
    assert code == 1 and "between 0 and 100" in err
    _run(capsys, "models", "canary", "tiny", "2", "--weight", "25", *s)
    code, out, _ = _run(capsys, "models", "promote", "tiny", *s)  # no version: the canary's
    assert code == 0 and out == "tiny@production → 2 (canary promoted)\n"
    assert store.aliases("tiny") == {"production": 2} and store.canary("tiny", "production") is None


def test_delete_and_gc_respect_a_live_lease(store: ModelStore, capsys) -> None:
    for seed in range(3):
        publish_tiny(store, seed=seed, aliases=("production",) if seed == 0 else ())
    store.leases.renew("pod-a", ["tiny:1", "tiny:2"], ttl_s=60)
    code, _, err = _run(capsys, "models", "delete", "tiny:2", "--store", store.root)
    assert code == EXIT_REFUSED and "tiny:2 is loaded by running replica(s): pod-a" in err and "Traceback" not in err
    code, out, _ = _run(capsys, "models", "gc", "tiny", "--store", store.root)
    assert code == 0 and out == "removed: nothing\nkept, loaded by running replicas: tiny:1 (pod-a), tiny:2 (pod-a)\n"
    store.leases.release("pod-a")
    assert _run(capsys, "models", "delete", "tiny:2", "--store", store.root)[1] == "deleted tiny:2\n"
