"""Subprocess worker for the race tests: one store change, made by another process than the test's.

``python -m tests.model_store.store_worker ROOT OP ARG...``, from the repository root. Ops: ``gc NAME``,
``delete NAME:V``, ``abort-gc NAME ALIAS`` (end the canary behind ``NAME@ALIAS`` if there is one, then gc).
Prints ``ok <result>``, or ``refused <ErrorType>: <message>`` for a store error (exit status 0 either way).
"""

from __future__ import annotations

import sys

from vitserve.model_store import ModelStore, StoreError


def run(store: ModelStore, op: str, args: list[str]) -> object:
    if op == "gc":
        return store.gc(args[0])
    if op == "delete":
        return store.delete(args[0]).ref
    if op == "abort-gc":
        try:
            store.end_canary(args[0], args[1], promote=False)
        except StoreError as err:
            print(f"abort refused {type(err).__name__}: {err}", flush=True)
        return store.gc(args[0])
    raise SystemExit(f"unknown op {op!r}")


def main(root: str, op: str, args: list[str]) -> None:
    try:
        result = run(ModelStore(root), op, args)
    except StoreError as err:
        print(f"refused {type(err).__name__}: {err}", flush=True)
        return
    print(f"ok {result}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
