"""`vitserve models canary|abort`, and `promote` without a version (the canary's): trial traffic for a version.

They write the shared store only; every running replica follows it within its poll interval, so a rollout or a
canary is one command whichever machine runs it.
"""

from __future__ import annotations

import argparse

from vitserve.admin.errors import CommandError
from vitserve.admin.store_args import open_store, user_errors

PROMOTE_CANARY_HELP = "no VERSION: promote the alias's canary (eval-gated for production like any promotion)"


def register_actions(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser
) -> None:
    """Add `canary` and `abort` to `vitserve models`."""
    p = actions.add_parser(
        "canary",
        parents=[parent],
        help="send a share of an alias's requests to another version (no VERSION: show the canary)",
        description="Send WEIGHT percent of NAME@ALIAS's requests to VERSION; the alias keeps naming its stable "
        "version. Every replica follows within its poll interval. End it with `vitserve models promote NAME` or "
        "`vitserve models abort NAME`.",
        epilog="examples:\n  vitserve models canary digits-vit 4 --weight 10\n  vitserve models canary digits-vit",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name")
    p.add_argument("version", type=int, nargs="?")
    p.add_argument("--weight", type=float, default=10.0, help="percent of requests for the canary (default 10)")
    p.add_argument("--alias", default="production", help="the alias the canary stands behind (default production)")
    p.set_defaults(func=cmd_canary)

    p = actions.add_parser(
        "abort",
        parents=[parent],
        help="end an alias's canary: every request goes back to the alias's version",
        description="End NAME@ALIAS's canary; every replica sends all requests to the alias's version again.",
        epilog="examples:\n  vitserve models abort digits-vit",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name")
    p.add_argument("--alias", default="production", help="the alias whose canary ends (default production)")
    p.set_defaults(func=cmd_abort)


def cmd_canary(args: argparse.Namespace) -> int:
    store = open_store(args)
    with user_errors():
        if args.version is None:
            canary = store.canary(args.name, args.alias)
            stable = store.aliases(args.name).get(args.alias)
            if canary is None:
                print(f"{args.name}@{args.alias} → {stable}; no canary")
            else:
                print(f"{args.name}@{args.alias} → {stable} ({100 - canary.weight:g} %), canary {canary.version} "
                      f"({canary.weight:g} %)")  # fmt: skip
            return 0
        canary = store.set_canary(args.name, args.alias, args.version, args.weight)
    print(f"{args.name}@{args.alias}: canary {canary.version} takes {canary.weight:g} % of requests")
    return 0


def cmd_promote_canary(args: argparse.Namespace) -> int:
    store = open_store(args)
    with user_errors():
        canary = store.end_canary(args.name, args.alias, promote=True, force=args.force, dataset=args.dataset)
    print(f"{args.name}@{args.alias} → {canary.version} (canary promoted)")
    return 0


def cmd_abort(args: argparse.Namespace) -> int:
    store = open_store(args)
    with user_errors():
        canary = store.end_canary(args.name, args.alias, promote=False)
        stable = store.aliases(args.name).get(args.alias)
    if stable is None:
        raise CommandError(f"{args.name}@{args.alias} vanished while its canary was aborted")
    print(f"{args.name}@{args.alias}: canary {canary.version} aborted; all requests → {stable}")
    return 0
