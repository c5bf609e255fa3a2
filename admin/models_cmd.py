"""`vitserve models list|show|promote|rollback|delete|gc|set-precision`, plus the registration of `import`,
`ckpt upload` and `predict` (their handlers live in ``admin.import_cmd`` and ``admin.predict_cmd``)."""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Mapping, Sequence

from vitserve.admin import canary_cmd, import_cmd, predict_cmd
from vitserve.admin.errors import CommandError
from vitserve.admin.store_args import open_store, store_parent, user_errors
from vitserve.model_store import Card, ModelStore
from vitserve.model_store.reference import parse_reference
from vitserve.model_store.serving import check_serving

EPILOG = """examples:
  vitserve models list
  vitserve models show vit-base              all versions and aliases of vit-base
  vitserve models show vit-base:2            the card of version 2 (--json for all of it)
  vitserve models promote vit-base 2 --alias production --dataset imagenet-val
  vitserve models rollback vit-base          production back to the version it named before
  vitserve models canary vit-base 3 --weight 10   10 % of production's requests to version 3
  vitserve models promote vit-base           the canary's version becomes production (eval-gated)
  vitserve models abort vit-base             end the canary
  vitserve models delete vit-base:1
  vitserve models gc vit-base                remove unaliased versions except the latest
  vitserve models set-precision vit-base:2 int8   serve version 2 at int8 (measure: bench --only precision)
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `models`, `import`, `ckpt` and `predict` to the CLI."""
    parent = store_parent()
    models = sub.add_parser(
        "models",
        help="list, inspect, promote, roll back and delete model versions in the store",
        description="Manage the versions and aliases of the model store.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = models.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = _action(actions, parent, "list", "models with their versions and aliases")
    p.set_defaults(func=cmd_list)

    p = _action(actions, parent, "show", "a model's versions, or one version's card")
    p.add_argument("ref", metavar="NAME[:V|@ALIAS]")
    p.set_defaults(func=cmd_show)

    _add_alias_actions(actions, parent)
    _add_set_precision(actions, parent)
    import_cmd.register(sub, parent)
    predict_cmd.register(sub, parent)


def _add_alias_actions(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser
) -> None:
    """promote, rollback, delete and gc: the commands that change what a name resolves to."""
    p = _action(
        actions,
        parent,
        "promote",
        "point an alias at a version (eval-gated for production)",
        "Point NAME@ALIAS at VERSION. For 'production' the move is refused when the version's recorded top1 on "
        "the validation set (--dataset, else every set both versions have) is below the current production "
        "version's, unless --force.",
    )
    p.add_argument("name")
    p.add_argument("version", type=int, nargs="?", help=canary_cmd.PROMOTE_CANARY_HELP)
    p.add_argument("--alias", default="production", help="alias to move (default: production)")
    p.add_argument("--dataset", help="validation set whose recorded top1 gates the promotion")
    p.add_argument("--force", action="store_true", help="promote even if the metric is lower")
    p.set_defaults(func=cmd_promote)

    canary_cmd.register_actions(actions, parent)

    p = _action(actions, parent, "rollback", "move an alias back to the version it named before")
    p.add_argument("name")
    p.add_argument("--alias", default="production", help="alias to roll back (default: production)")
    p.set_defaults(func=cmd_rollback)

    p = _action(actions, parent, "delete", "delete one version (refused while an alias or a running replica holds it)")
    p.add_argument("ref", metavar="NAME:V")
    p.set_defaults(func=cmd_delete)

    p = _action(
        actions,
        parent,
        "gc",
        "remove unaliased versions except the latest, and leftovers of interrupted publishes",
        "Remove every version of NAME that no alias points at, except the latest, and the leftovers of "
        "publishes and deletes that were killed. Aliased versions and the latest are always kept.",
    )
    p.add_argument("name")
    p.set_defaults(func=cmd_gc)


def _add_set_precision(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser
) -> None:
    p = _action(
        actions,
        parent,
        "set-precision",
        "choose the precision a version is served with (reduced ones need a measured accuracy)",
        "Set the precision NAME:V is served with by the CPU engines when the service's engine precision is auto "
        "(the default); it takes effect when the service next loads the version. int8 (ONNX Runtime's dynamic "
        "quantisation), int8-static (OpenVINO on an NNCF-calibrated IR) and bf16 (OpenVINO; f32 on a CPU without "
        "native bf16) are refused unless the card holds measured '<dataset>@P' entries, written by "
        "`vitserve bench --only precision --model NAME:V --precision P`, each with top-1 agreement >= 99%, "
        "or --force is given. fp32 undoes it.",
    )
    p.add_argument("ref", metavar="NAME:V")
    p.add_argument("precision", metavar="{fp32,int8,int8-static,bf16}")  # checked against the store's list
    p.add_argument("--force", action="store_true", help="opt in without a measured accuracy, or below the gate")
    p.set_defaults(func=cmd_set_precision)


def _action(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    parent: argparse.ArgumentParser,
    name: str,
    summary: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    examples = [line for line in EPILOG.splitlines()[1:] if line.split()[2:3] == [name]]
    p = actions.add_parser(
        name,
        parents=[parent],
        help=summary,
        description=textwrap.fill(description or summary[0].upper() + summary[1:] + ".", 100),
        epilog="examples:\n" + "\n".join(examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def cmd_list(args: argparse.Namespace) -> int:
    store = open_store(args)
    with user_errors():
        rows = [(name, store.versions(name), store.aliases(name)) for name in store.list_models()]
    if args.json:
        out = [{"name": n, "versions": [c.version for c in cs], "aliases": a} for n, cs, a in rows]
        print(json.dumps(out, indent=2))
        return 0
    if not rows:
        print(f"no models in {store.root}")
        return 0
    table: list[tuple[str, ...]] = [("NAME", "VERSIONS", "LATEST", "ALIASES", "DESCRIPTION")]
    for name, cards, aliases in rows:
        versions = ",".join(str(c.version) for c in cards)
        alias_text = " ".join(f"{a}={v}" for a, v in sorted(aliases.items())) or "-"
        table.append((name, versions, str(cards[-1].version), alias_text, cards[-1].description or "-"))
    _print_table(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = open_store(args)
    with user_errors():
        parsed = parse_reference(args.ref)
        if parsed.version is None and parsed.alias is None:
            return _show_model(store, parsed.name, args.json)
        card = store.resolve(args.ref)
    if args.json:
        print(card.to_json(), end="")
        return 0
    _print_card(card, store.aliases(card.name))
    return 0


def _show_model(store: ModelStore, name: str, as_json: bool) -> int:
    cards, aliases = store.versions(name), store.aliases(name)
    if as_json:
        print(json.dumps({"name": name, "aliases": aliases, "versions": [c.to_dict() for c in cards]}, indent=2))
        return 0
    by_version: dict[int, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)
    table: list[tuple[str, ...]] = [("VERSION", "CREATED", "ALIASES", "METRICS", "SOURCE")]
    for card in cards:
        table.append(
            (
                str(card.version),
                card.created_at,
                ",".join(sorted(by_version.get(card.version, []))) or "-",
                _metrics_text(card) or "-",
                str(card.lineage.get("format") or card.lineage.get("uploaded") or card.lineage.get("path") or "-"),
            )
        )
    print(f"{name}  (resolves to {store.resolve(name).version})")
    _print_table(table)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    if args.version is None:
        return canary_cmd.cmd_promote_canary(args)
    store = open_store(args)
    with user_errors():
        card = store.set_alias(args.name, args.alias, args.version, force=args.force, dataset=args.dataset)
    return _emit(args, f"{card.name}@{args.alias} → {card.version}", {"name": card.name, "alias": args.alias,
                                                                      "version": card.version})  # fmt: skip


def cmd_rollback(args: argparse.Namespace) -> int:
    store = open_store(args)
    with user_errors():
        card = store.rollback(args.name, args.alias)
    return _emit(args, f"{card.name}@{args.alias} → {card.version}", {"name": card.name, "alias": args.alias,
                                                                      "version": card.version})  # fmt: skip


def cmd_delete(args: argparse.Namespace) -> int:
    store = open_store(args)
    with user_errors():
        card = store.delete(args.ref)
    return _emit(args, f"deleted {card.ref}", {"deleted": card.ref})


def cmd_gc(args: argparse.Namespace) -> int:
    store = open_store(args)
    with user_errors():
        removed = store.gc(args.name)
        held = store.held(args.name)
    text = "removed: " + (", ".join(removed) if removed else "nothing")
    if held:
        kept = ", ".join(f"{args.name}:{v} ({', '.join(r)})" for v, r in sorted(held.items()))
        text += f"\nkept, loaded by running replicas: {kept}"
    return _emit(args, text, {"removed": list(removed), "kept": {str(v): list(r) for v, r in sorted(held.items())}})


def cmd_set_precision(args: argparse.Namespace) -> int:
    store = open_store(args)
    with user_errors():
        parsed = parse_reference(args.ref)
        if parsed.version is None:
            raise CommandError(f"set-precision needs an explicit version (name:V), got {args.ref!r}")
        card = store.card(parsed.name, parsed.version)
        check_serving(card.ref, {"precision": args.precision})  # an unknown precision is named before the gate
        measured = _measured_agreement(card, args.precision)
        gated = args.precision != "fp32"
        if gated and not measured and not args.force:
            flag = "" if args.precision == "int8" else f" --precision {args.precision}"
            raise CommandError(
                f"{card.ref} has no measured {args.precision} accuracy in its card; run "
                f"`vitserve bench --only precision --model {card.ref}{flag}` first, or pass --force"
            )
        short = {d: v for d, v in measured.items() if v < MIN_AGREEMENT}
        if gated and short and not args.force:
            raise CommandError(
                f"{card.ref} at {args.precision} keeps under {MIN_AGREEMENT:.0%} of fp32's top-1 predictions: "
                + ", ".join(f"{d} {v:.4f}" for d, v in short.items())
                + "; pass --force to serve it anyway"
            )
        card = store.set_serving(card.ref, precision=args.precision)
    if measured:
        note = " (measured top1_agreement: " + ", ".join(f"{d} {v:.4f}" for d, v in measured.items()) + ")"
    else:
        note = " (no measured accuracy: forced)" if gated else ""
    payload = {"ref": card.ref, "precision": card.serving["precision"], "measured_top1_agreement": measured}
    return _emit(args, f"{card.ref} serves at {card.serving['precision']}{note}", payload)


def _emit(args: argparse.Namespace, text: str, payload: Mapping[str, object]) -> int:
    """The result as one line of text, or as JSON with ``--json``."""
    print(json.dumps(payload, indent=2, ensure_ascii=False) if args.json else text)
    return 0


MIN_AGREEMENT = 0.99  # the gate: top-1 agreement with fp32 on every measured data set


def _measured_agreement(card: Card, precision: str) -> dict[str, float]:
    """``dataset`` → top-1 agreement with fp32 of the ``"<dataset>@<precision>"`` metrics in ``card``."""
    suffix = f"@{precision}"
    return {
        dataset.removesuffix(suffix): values["top1_agreement"]
        for dataset, values in sorted(card.metrics.items())
        if dataset.endswith(suffix) and "top1_agreement" in values
    }


def _print_card(card: Card, aliases: dict[str, int]) -> None:
    cfg = card.config
    held = sorted(a for a, v in aliases.items() if v == card.version)
    lines = [
        ("model", card.ref),
        ("aliases", ", ".join(held) or "-"),
        ("created", card.created_at),
        ("description", card.description or "-"),
        ("architecture", f"{cfg.img_size}px patch {cfg.patch_size}, dim {cfg.embed_dim}, depth {cfg.depth}, "
         f"{cfg.num_heads} heads, pool {cfg.global_pool}, {cfg.num_classes} classes"),
        ("preprocess", f"resize {card.data.resize_size} → crop {card.data.img_size}, {card.data.interpolation}, "
         f"mean {card.data.mean}, std {card.data.std}"),
        ("labels", ", ".join(card.labels[:5]) + (", ..." if len(card.labels) > 5 else "")),
        ("weights", f"{card.weights} sha256 {card.sha256}"),
        ("lineage", json.dumps(card.lineage, sort_keys=True)),
        ("metrics", _metrics_text(card) or "-"),
        ("serving", " ".join(f"{k}={v}" for k, v in sorted(card.serving.items())) or "-"),
    ]  # fmt: skip
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}}  {value}")


def _metrics_text(card: Card) -> str:
    return "; ".join(
        f"{dataset}: " + " ".join(f"{k}={v:.4f}" for k, v in sorted(values.items()))
        for dataset, values in sorted(card.metrics.items())
    )


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
