"""``vitserve import hf:ORG/NAME`` / ``timm/NAME``: fetch through the Hub client, convert, publish."""

from __future__ import annotations

import argparse
import re
import sys

from tqdm import tqdm

from vitserve.admin.errors import EXIT_NOT_FOUND, CommandError
from vitserve.admin.store_args import config_from_arg, labels_from_file, open_store, user_errors
from vitserve.model_store.hub import HubId, HubUnavailable, fetch, lineage, timm_architecture, timm_data


def default_name(hub_id: HubId) -> str:
    """The store name for a Hub id without ``--name``: the repository's name, lower case, store-safe."""
    name = hub_id.repo_id.split("/")[-1].lower()
    return re.sub(r"[^a-z0-9._-]+", "-", name).strip("-.") or "hub-model"


def import_from_hub(args: argparse.Namespace, hub_id: HubId) -> int:
    """Fetch (or read from the cache), convert and publish ``hub_id``; prints the new reference."""
    from vitserve.vit.convert import convert_file

    name = args.name or default_name(hub_id)
    override = config_from_arg(args.config)[0] if args.config else None
    quiet = getattr(args, "json", False)
    with tqdm(total=3, desc=f"import {hub_id}", unit="step", file=sys.stderr, disable=quiet or None) as bar:
        bar.set_postfix_str("fetching")
        try:
            files = fetch(hub_id)
        except HubUnavailable as err:
            raise CommandError(str(err), EXIT_NOT_FOUND) from None
        bar.update()
        bar.set_postfix_str(f"converting ({files.layout} layout)")
        with user_errors():
            if override is None and files.layout == "timm":
                override = timm_architecture(files)
            converted = convert_file(files.weights, files.layout, override)
            data, names = (converted.data, converted.labels)
            if files.layout == "timm":
                data, names = timm_data(files, converted.config)
            labels = names if names and not args.labels else labels_from_file(args.labels, converted.config.num_classes)
            bar.update()
            bar.set_postfix_str("verifying and publishing")
            card = open_store(args).publish(
                name,
                converted.state,
                converted.config,
                data,
                labels,
                lineage={"hub": lineage(files), "converted_from": converted.source},
                description=args.description or f"{hub_id} at {files.commit[:12]}",
                aliases=args.alias,
            )
        bar.update()
    return _report(args, card.ref, str(hub_id), files.commit, files.layout)


def _report(args: argparse.Namespace, ref: str, hub_id: str, commit: str, layout: str) -> int:
    if getattr(args, "json", False):
        import json

        print(json.dumps({"ref": ref, "hub_id": hub_id, "commit": commit, "layout": layout, "aliases": args.alias}))
    else:
        aliases = f" (aliases: {', '.join(args.alias)})" if args.alias else ""
        print(f"published {ref}{aliases} from {hub_id} ({layout} layout, commit {commit[:12]})")
    return 0
