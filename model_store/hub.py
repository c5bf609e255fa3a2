"""Checkpoints by Hub id, through the Hub's own client (``huggingface_hub``), into ``vit.convert``.

Ids: ``hf:ORG/NAME[@REVISION]`` (a Hugging Face ``ViTForImageClassification`` repository, or any repository
holding timm weights), ``timm/NAME`` and ``hf-hub:timm/NAME`` (timm's ids, e.g.
``timm/vit_base_patch16_224.augreg_in21k_ft_in1k``). The files are fetched with ``snapshot_download``, so the
client's cache (``HF_HOME`` / ``HF_HUB_CACHE``), offline mode (``HF_HUB_OFFLINE=1``) and token apply as they do
for every other Hub user; with no network the client answers from its cache. The repository's ``config.json``
says which layout it is: ``model_type`` for Hugging Face, ``architecture``/``pretrained_cfg`` for timm.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitserve.model_store.errors import ModelNotFound
from vitserve.vit.config import DataConfig, ViTConfig

log = logging.getLogger(__name__)

_PREFIXES = ("hf:", "hf-hub:")
_REPO = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
FILES = ("config.json", "model.safetensors")


class HubUnavailable(ModelNotFound):
    """The id cannot be resolved: not on the Hub, or not in the cache while offline (the message says which)."""


@dataclass(frozen=True)
class HubId:
    repo_id: str  # ORG/NAME
    revision: str | None = None  # a branch, tag or commit; None → the repository's default branch

    def __str__(self) -> str:
        return f"hf:{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def parse_hub_id(text: str) -> HubId | None:
    """A ``HubId`` for ``hf:ORG/NAME[@REV]``, ``hf-hub:ORG/NAME`` or ``timm/NAME``; None for anything else
    (a local path). ``timm/NAME`` is a Hub id only when no such local path exists."""
    body = next((text[len(p) :] for p in _PREFIXES if text.startswith(p)), None)
    if body is None:
        if not text.startswith("timm/") or Path(text).exists():
            return None
        body = text
    repo, _, revision = body.partition("@")
    if not _REPO.match(repo):
        raise ValueError(f"{text!r} is not a Hub id: expected hf:ORG/NAME[@REVISION] or timm/NAME")
    return HubId(repo, revision or None)


@dataclass(frozen=True)
class HubFiles:
    """The snapshot's files (paths inside the client's cache) and what they are."""

    hub_id: HubId
    folder: Path
    weights: Path
    config: dict[str, Any]
    layout: str  # "hf" or "timm"
    commit: str


def fetch(hub_id: HubId) -> HubFiles:
    """``config.json`` and ``model.safetensors`` of ``hub_id`` from the Hub or its cache."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        folder = Path(snapshot_download(hub_id.repo_id, revision=hub_id.revision, allow_patterns=list(FILES)))
    except LocalEntryNotFoundError as err:
        mode = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub could not be reached"
        raise HubUnavailable(
            f"{hub_id}: {mode} and the Hub cache ({constants.HF_HUB_CACHE}) does not hold it; download it on a "
            f"machine with network (huggingface-cli download {hub_id.repo_id}) and copy the cache, or unset "
            "HF_HUB_OFFLINE"
        ) from err
    except (RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise HubUnavailable(f"{hub_id}: not found on the Hub ({type(err).__name__})") from err
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise HubUnavailable(f"{hub_id}: the snapshot in {folder} has no {', '.join(missing)} (safetensors only)")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    layout = "timm" if "architecture" in config or "pretrained_cfg" in config else "hf"
    return HubFiles(hub_id, folder, folder / "model.safetensors", config, layout, folder.name)


def timm_data(files: HubFiles, config: ViTConfig) -> tuple[DataConfig, list[str] | None]:
    """Preprocessing from timm's ``pretrained_cfg`` (crop, interpolation, mean, std) and class names from its
    ``label_names`` (when they match the head), for the converted ``config``."""
    pretrained = files.config.get("pretrained_cfg", {})
    defaults = DataConfig()
    data = DataConfig(
        img_size=config.img_size,
        crop_pct=float(pretrained.get("crop_pct", defaults.crop_pct)),
        interpolation=pretrained.get("interpolation", defaults.interpolation),
        mean=tuple(pretrained.get("mean", defaults.mean)),
        std=tuple(pretrained.get("std", defaults.std)),
    )
    labels = files.config.get("label_names")
    names = [str(x) for x in labels] if isinstance(labels, list) and len(labels) == config.num_classes else None
    return data, names


def timm_architecture(files: HubFiles) -> ViTConfig | None:
    """The architecture when timm's ``config.json`` names the head count (``model_args.num_heads``, written
    for models built with non-default arguments); None → inferred from the weights' shapes and standard widths."""
    heads = files.config.get("model_args", {}).get("num_heads")
    if heads is None:
        return None
    from vitserve.vit.convert import infer_config, read_weights, to_vitserve

    return infer_config(to_vitserve(read_weights(files.weights), "timm"), num_heads=int(heads))


def lineage(files: HubFiles) -> dict[str, Any]:
    """What the card records: the id, the commit the snapshot is, and the layout."""
    return {
        "hub_id": str(files.hub_id),
        "repo_id": files.hub_id.repo_id,
        "commit": files.commit,
        "layout": files.layout,
    }
