"""Leases: which versions each running replica holds, so that delete and gc never pull one from under it.

Layout: ``<root>/.leases/<replica>.json``, one file per replica, rewritten whole (``vit.files``: temp file +
rename) each time the replica renews it::

    {"replica": "vitserve-7d9f-abcde", "host": "node-3", "pid": 7, "renewed_at": 1767000000.0,
     "expires_at": 1767000030.0, "holds": ["digits-vit:2", "digits-vit:3"]}

A lease is live until ``expires_at`` (wall-clock seconds since the epoch, so that every machine sharing the
store reads it the same way: keep the TTL well above the clocks' skew). A replica that stops cleanly removes
its file; one killed with SIGKILL simply stops renewing, and its lease stops counting once it expires. Expired
files are only clutter: ``ModelStore.gc`` removes the ones expired for more than a TTL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vitserve.model_store.errors import InvalidName
from vitserve.vit.files import write_text_atomic

log = logging.getLogger(__name__)

LEASES_DIR = ".leases"
# Replica ids become file names: Kubernetes pod names fit (lower case, digits, '-', '.').
_REPLICA_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Lease:
    """One replica's record: the versions (``name:V``) it holds, and until when the record counts."""

    replica: str
    holds: tuple[str, ...]
    renewed_at: float
    expires_at: float
    host: str = ""
    pid: int = 0

    def live(self, now: float) -> bool:
        return self.expires_at > now


def default_replica_id() -> str:
    """``<hostname>-<pid>``: the pod's name in Kubernetes, unique per process on one machine."""
    return f"{socket.gethostname()}-{os.getpid()}"


def validate_replica(replica: str) -> str:
    if not _REPLICA_PATTERN.fullmatch(replica):
        raise InvalidName(f"invalid replica id {replica!r}: use 1-128 of A-Z a-z 0-9 . _ -")
    return replica


class LeaseBook:
    """The lease files under ``<root>/.leases``. Each replica writes only its own file, so no lock is needed."""

    def __init__(self, root: Path) -> None:
        self.dir = root / LEASES_DIR

    def renew(self, replica: str, holds: Iterable[str], ttl_s: float) -> Lease:
        """Write ``replica``'s lease: it holds ``holds`` until ``ttl_s`` seconds from now."""
        now = time.time()
        lease = Lease(
            replica=validate_replica(replica),
            holds=tuple(sorted(set(holds))),
            renewed_at=now,
            expires_at=now + ttl_s,
            host=socket.gethostname(),
            pid=os.getpid(),
        )
        record = {
            "replica": lease.replica,
            "host": lease.host,
            "pid": lease.pid,
            "renewed_at": lease.renewed_at,
            "expires_at": lease.expires_at,
            "holds": list(lease.holds),
        }
        write_text_atomic(self.dir / f"{lease.replica}.json", json.dumps(record, indent=1) + "\n")
        return lease

    def release(self, replica: str) -> None:
        """Remove ``replica``'s lease (a clean shutdown): it holds nothing from now on."""
        (self.dir / f"{validate_replica(replica)}.json").unlink(missing_ok=True)

    def all(self) -> list[Lease]:
        """Every readable lease file, live or not (a file being replaced is read whole: renames are atomic)."""
        if not self.dir.is_dir():
            return []
        leases = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                leases.append(
                    Lease(
                        replica=str(raw["replica"]),
                        holds=tuple(str(ref) for ref in raw["holds"]),
                        renewed_at=float(raw["renewed_at"]),
                        expires_at=float(raw["expires_at"]),
                        host=str(raw.get("host", "")),
                        pid=int(raw.get("pid", 0)),
                    )
                )
            except FileNotFoundError:
                continue  # released while we listed
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.warning("ignoring unreadable lease %s: %s", path, err)
        return leases

    def live(self) -> list[Lease]:
        now = time.time()
        return [lease for lease in self.all() if lease.live(now)]

    def holders(self, ref: str) -> list[Lease]:
        """Live leases holding ``ref`` (``name:V``)."""
        return [lease for lease in self.live() if ref in lease.holds]

    def remove_expired(self, older_than_s: float) -> list[str]:
        """Delete lease files expired for more than ``older_than_s``; return their replicas."""
        now = time.time()
        gone = []
        for lease in self.all():
            if lease.expires_at + older_than_s < now:
                (self.dir / f"{lease.replica}.json").unlink(missing_ok=True)
                gone.append(lease.replica)
        return gone


def describe_holders(ref: str, leases: list[Lease]) -> str:
    """``"tiny:1 is held by replica a (node-1, expires in 2.6 s), ..."``: for refusals."""
    now = time.time()
    parts = [f"{lease.replica} ({lease.host}, lease expires in {lease.expires_at - now:.1f} s)" for lease in leases]
    return f"{ref} is loaded by running replica(s): {', '.join(parts)}"
