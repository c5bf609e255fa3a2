"""Subprocess worker for the kill and race tests.

``python -m tests.model_store.publish_worker ROOT NAME COUNT SEED [ALIAS]``, from the repository root.

Publishes COUNT tiny versions of NAME into the store at ROOT, printing ``published N`` per version (and, with
ALIAS, pointing it at each new version). ``VITSERVE_STORE_TEST_PAUSE_AT`` makes it pause at a stage;
``PUBLISH_WORKER_GO_FILE`` makes it print ``ready`` and wait for that file before publishing.
"""

from __future__ import annotations

import os
import sys
import time

from tests.tiny import TINY, TINY_DATA, random_state
from vitserve.model_store import ModelStore


def main(root: str, name: str, count: int, seed: int, alias: str | None) -> None:
    store = ModelStore(root)
    labels = [str(i) for i in range(TINY.num_classes)]
    go = os.environ.get("PUBLISH_WORKER_GO_FILE")  # start line for races: wait until the file exists
    print("ready", flush=True)
    while go and not os.path.exists(go):
        time.sleep(0.005)
    for i in range(count):
        aliases = (alias,) if alias else ()
        card = store.publish(
            name, random_state(seed + i), TINY, TINY_DATA, labels, lineage={"seed": seed + i}, aliases=aliases
        )
        print(f"published {card.version}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
