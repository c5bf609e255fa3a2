"""Leases: which versions each running replica holds, so that delete and gc never pull one from under it.

Layout: ``<root>/.leases/<replica>.json``, one file per replica, rewritten whole (``vit.files``: temp file +
rename) each time the replica renews it::

    {"replica": "vitserve-7d9f-abcde", "host": "node-3", "pid": 7, "renewed_at": 1767000000.0,
     "expires_at": 1767000030.0, "holds": ["digits-vit:2", "digits-vit:3"]}

A lease is live until ``expires_at`` (wall-clock seconds since the epoch, so that every machine sharing the
store reads it the same way: keep the TTL well above the clocks' skew). A replica that stops cleanly removes
its file; one killed with SIGKILL simply stops renewing, and its lease stops counting once it expires. Expired
files are only clutter: ``ModelStore.gc`` removes the ones expired for more than a TTL.

Lease files are read strictly (``parse_lease``): a file that is not a lease (bad JSON, wrong types, a replica
that is not its file's name, an expiry before its renewal or more than ``MAX_LEASE_TTL_S`` after it) is ignored
with a warning and holds nothing; a held entry that is not ``name:V`` (``V`` in ASCII digits) is dropped with a
warning while the lease's other entries still count. Neither ever stops gc or delete.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vitserve.model_store.errors import InvalidName
from vitserve.model_store.reference import NAME_PATTERN
from vitserve.vit.files import write_text_atomic

log = logging.getLogger(__name__)

LEASES_DIR = ".leases"
# Replica ids become file names: Kubernetes pod names fit (lower case, digits, '-', '.').
_REPLICA_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A version number as the store writes it: ASCII digits only (str.isdigit() is also true of '²', which int() refuses).
_VERSION_PATTERN = re.compile(r"[1-9][0-9]{0,17}")
# A lease counts for at most this long after its renewal. An expiry further out (a clock gone wrong, a hand-edited
# file, infinity) would hold its versions against gc and delete for good, so such a file is not a lease.
MAX_LEASE_TTL_S = 7 * 24 * 3600.0


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
        if not 0 < ttl_s <= MAX_LEASE_TTL_S:
            raise ValueError(f"lease TTL must be in (0, {MAX_LEASE_TTL_S:.0f}] s, got {ttl_s}")
        holds = tuple(holds)  # iterated twice: a generator would be empty the second time
        bad = sorted(ref for ref in holds if split_held(ref) is None)
        if bad:
            raise InvalidName(f"a lease holds versions as name:V, got {', '.join(map(repr, bad))}")
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
        leases, now = [], time.time()
        for path in sorted(self.dir.glob("*.json")):
            try:
                leases.append(parse_lease(path, path.read_text(encoding="utf-8"), now))
            except FileNotFoundError:
                continue  # released while we listed
            except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                log.warning("ignoring lease file %s: not a lease (%s)", path, err)
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
                # parse_lease made sure the replica is the file's own name: nothing else can be named here.
                (self.dir / f"{validate_replica(lease.replica)}.json").unlink(missing_ok=True)
                gone.append(lease.replica)
        return gone


def split_held(ref: object) -> tuple[str, int] | None:
    """``(name, version)`` of a held ``name:V``, or None when ``ref`` is not one."""
    if not isinstance(ref, str):
        return None
    name, _, version = ref.partition(":")
    if not NAME_PATTERN.fullmatch(name) or not _VERSION_PATTERN.fullmatch(version):
        return None
    return name, int(version)


def parse_lease(path: Path, text: str, now: float) -> Lease:
    """The lease in ``path`` (holding ``text``), read strictly: a ``ValueError`` saying why it is not one.
    Held entries that are not ``name:V`` are dropped with a warning; the others still count."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError(f"a JSON object was expected, got {type(raw).__name__}")
    replica = raw.get("replica")
    if replica != path.stem or not _REPLICA_PATTERN.fullmatch(path.stem):
        raise ValueError(f"its replica {replica!r} is not its file's name")
    renewed_at, expires_at = _timestamp(raw, "renewed_at"), _timestamp(raw, "expires_at")
    if not 0 < renewed_at <= expires_at <= min(renewed_at, now) + MAX_LEASE_TTL_S:
        raise ValueError(
            f"expires_at {expires_at} must follow renewed_at {renewed_at} by at most {MAX_LEASE_TTL_S:.0f} s"
        )
    holds = raw.get("holds")
    if not isinstance(holds, list):
        raise ValueError(f"holds must be a list of name:V, got {type(holds).__name__}")
    bad = [ref for ref in holds if split_held(ref) is None]
    if bad:
        log.warning("lease %s: ignoring held entries that are not name:V: %s", path, ", ".join(map(repr, bad)))
    host, pid = raw.get("host", ""), raw.get("pid", 0)
    return Lease(
        replica=replica,
        holds=tuple(sorted({ref for ref in holds if split_held(ref) is not None})),
        renewed_at=renewed_at,
        expires_at=expires_at,
        host=host if isinstance(host, str) else "",  # informational: a wrong type is not worth a lost lease
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else 0,
    )


def _timestamp(raw: dict[str, object], key: str) -> float:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number of seconds, got {value!r}")
    return float(value)


def describe_holders(ref: str, leases: list[Lease]) -> str:
    """``"tiny:1 is held by replica a (node-1, expires in 2.6 s), ..."``: for refusals."""
    now = time.time()
    parts = [f"{lease.replica} ({lease.host}, lease expires in {lease.expires_at - now:.1f} s)" for lease in leases]
    return f"{ref} is loaded by running replica(s): {', '.join(parts)}"
