"""A small reader for the repository's Dockerfile and .dockerignore (helpers for tests/deploy).

It understands what our Dockerfile uses: comments, backslash continuations, `INSTRUCTION args` lines and JSON
exec forms; the parser directive on line 1 is a comment here.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the (joined) line

    def exec_form(self) -> list[str]:
        """The JSON array form's words (`CMD ["a", "b"]`); the shell form's words otherwise."""
        text = self.args.strip()
        if text.startswith("["):
            words = json.loads(text)
            assert all(isinstance(w, str) for w in words)
            return list(words)
        return shlex.split(text)


def read_instructions(path: Path) -> list[Instruction]:
    """The Dockerfile's instructions in order, continuation lines joined."""
    out: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, f"{path}: a continuation runs past the end"
    return out


def healthcheck_command(ins: Instruction) -> list[str]:
    """`HEALTHCHECK [--options] CMD ...` → the command's words."""
    assert ins.keyword == "HEALTHCHECK"
    _, sep, command = ins.args.partition("CMD ")
    assert sep, "HEALTHCHECK without CMD"
    return Instruction("CMD", command).exec_form()


def ignore_patterns(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def is_ignored(relpath: str, patterns: list[str]) -> bool:
    """Whether Docker's build context leaves ``relpath`` out: a pattern matches the path or a parent of it
    (`**` matching any number of directories); a later `!pattern` re-includes."""
    parts = relpath.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        variants = {pat, pat.replace("**/", "")}
        if any(fnmatch.fnmatchcase(c, v) for c in candidates for v in variants):
            ignored = not negate
    return ignored
