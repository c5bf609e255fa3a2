"""Progress on stderr for the CLI's long steps (tqdm), silent when asked (``--json``) or when not a terminal."""

from __future__ import annotations

import sys
from types import TracebackType

from tqdm import tqdm


class Steps:
    """A bar over ``total`` named steps: ``with Steps(3, "export") as s: s.next("graph"); ...``."""

    def __init__(self, total: int, desc: str, *, quiet: bool = False) -> None:
        self._bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, disable=quiet or None, leave=False)

    def next(self, what: str) -> None:
        """Mark the current step done and name the next one."""
        self._bar.set_postfix_str(what, refresh=False)
        self._bar.update(1)

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self._bar.close()


def bar(total: int | None, desc: str, *, unit: str = "it", quiet: bool = False) -> tqdm:
    """A counting bar on stderr (``disable=None``: shown only on a terminal, so logs and pipes stay clean)."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=quiet or None, dynamic_ncols=True)
