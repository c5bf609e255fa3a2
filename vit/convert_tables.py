"""Rename tables between our parameter names and each source format's, and the engine that applies them.

One table per format serves both directions. A ``Rule`` maps one of our keys (``{i}`` stands for the block
index) to one or more of the source's keys, with the reshaping that turns theirs into ours:

- ``copy``: same array, new name;
- ``transpose``: a 2-D weight the source stores as (in, out), where ours (like torch) is (out, in);
- ``rows``: several source arrays stacked along axis 0 into one of ours (our fused qkv is [q | k | v] rows).

Everything here is pure: ``dict[str, ndarray]`` in, ``dict[str, ndarray]`` out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from vitserve.vit.checkpoint import CheckpointMismatch, StateDict

Kind = Literal["copy", "transpose", "rows"]


@dataclass(frozen=True)
class Rule:
    ours: str  # our key, "{i}" for the block index
    theirs: tuple[str, ...]  # the source's key(s); several only for kind "rows"
    kind: Kind = "copy"


def _linear(ours: str, theirs: str, kind: Kind = "copy") -> list[Rule]:
    """A linear or conv layer: weight (reshaped by ``kind``) and bias (always copied: it is 1-D)."""
    return [Rule(f"{ours}.weight", (f"{theirs}.weight",), kind), Rule(f"{ours}.bias", (f"{theirs}.bias",))]


def _norm(ours: str, theirs: str, scale: str = "weight", shift: str = "bias") -> list[Rule]:
    """A LayerNorm: MindSpore calls torch's weight/bias gamma/beta."""
    return [Rule(f"{ours}.gamma", (f"{theirs}.{scale}",)), Rule(f"{ours}.beta", (f"{theirs}.{shift}",))]


def _rows(ours: str, theirs: Sequence[str]) -> list[Rule]:
    """Our fused layer from separate source layers, stacked as rows (weight and bias alike)."""
    return [
        Rule(f"{ours}.weight", tuple(f"{t}.weight" for t in theirs), "rows"),
        Rule(f"{ours}.bias", tuple(f"{t}.bias" for t in theirs), "rows"),
    ]


# timm (and MAE, whose models_vit is timm's VisionTransformer): our names are timm's, except LayerNorm's
# weight/bias, which MindSpore calls gamma/beta. Weights are (out, in) on both sides: no transposes.
TIMM_RULES: tuple[Rule, ...] = (
    Rule("cls_token", ("cls_token",)),
    Rule("pos_embed", ("pos_embed",)),
    *_linear("patch_embed.proj", "patch_embed.proj"),
    *_norm("blocks.{i}.norm1", "blocks.{i}.norm1"),
    *_linear("blocks.{i}.attn.qkv", "blocks.{i}.attn.qkv"),
    *_linear("blocks.{i}.attn.proj", "blocks.{i}.attn.proj"),
    *_norm("blocks.{i}.norm2", "blocks.{i}.norm2"),
    *_linear("blocks.{i}.mlp.fc1", "blocks.{i}.mlp.fc1"),
    *_linear("blocks.{i}.mlp.fc2", "blocks.{i}.mlp.fc2"),
    *_norm("norm", "norm"),  # token pool: final norm over all tokens
    *_norm("fc_norm", "fc_norm"),  # mean pool: norm after pooling
    *_linear("head", "head"),
)

# Hugging Face ViTForImageClassification as save_pretrained writes it (and as hub checkpoints are laid out).
_HF_LAYER = "vit.encoder.layer.{i}"
_HF_ATTN = f"{_HF_LAYER}.attention.attention"
HF_RULES: tuple[Rule, ...] = (
    Rule("cls_token", ("vit.embeddings.cls_token",)),
    Rule("pos_embed", ("vit.embeddings.position_embeddings",)),
    *_linear("patch_embed.proj", "vit.embeddings.patch_embeddings.projection"),
    *_norm("blocks.{i}.norm1", f"{_HF_LAYER}.layernorm_before"),
    # HF keeps query, key and value as three (D, D) linears; ours is one (3D, D) linear whose output rows
    # are [q | k | v], the order our attention splits them in.
    *_rows("blocks.{i}.attn.qkv", (f"{_HF_ATTN}.query", f"{_HF_ATTN}.key", f"{_HF_ATTN}.value")),
    *_linear("blocks.{i}.attn.proj", f"{_HF_LAYER}.attention.output.dense"),
    *_norm("blocks.{i}.norm2", f"{_HF_LAYER}.layernorm_after"),
    *_linear("blocks.{i}.mlp.fc1", f"{_HF_LAYER}.intermediate.dense"),
    *_linear("blocks.{i}.mlp.fc2", f"{_HF_LAYER}.output.dense"),
    # HF pools the cls token after a final LayerNorm over all tokens: timm's token pool exactly.
    *_norm("norm", "vit.layernorm"),
    *_linear("head", "classifier"),
)

# MindFormers vit_base_p16 (docs/model.md, "Weight conversion"). Its `Linear` multiplies by the weight as stored
# when transpose_b=False: attention.projection and output.mapping/projection are stored (in, out), so they
# are transposed; dense1/2/3 and head use transpose_b=True and are (out, in) like ours.
_MF_BLOCK = "vit.blocks.{i}"
MINDFORMERS_RULES: tuple[Rule, ...] = (
    Rule("cls_token", ("vit.cls_tokens",)),  # MindFormers' plural name
    Rule("pos_embed", ("vit.pos_embed",)),
    *_linear("patch_embed.proj", "vit.patch_embed.proj"),
    *_norm("blocks.{i}.norm1", f"{_MF_BLOCK}.layernorm1", "gamma", "beta"),
    # dense1/2/3 are query/key/value: our fused qkv's rows [q | k | v].
    *_rows(
        "blocks.{i}.attn.qkv",
        (f"{_MF_BLOCK}.attention.dense1", f"{_MF_BLOCK}.attention.dense2", f"{_MF_BLOCK}.attention.dense3"),
    ),
    *_linear("blocks.{i}.attn.proj", f"{_MF_BLOCK}.attention.projection", "transpose"),
    *_norm("blocks.{i}.norm2", f"{_MF_BLOCK}.layernorm2", "gamma", "beta"),
    *_linear("blocks.{i}.mlp.fc1", f"{_MF_BLOCK}.output.mapping", "transpose"),
    *_linear("blocks.{i}.mlp.fc2", f"{_MF_BLOCK}.output.projection", "transpose"),
    # MindFormers' ViTModel always builds fc_norm and has no final norm: only the mean pool maps onto it.
    *_norm("fc_norm", "vit.fc_norm", "gamma", "beta"),
    *_linear("head", "head"),
)

# Source format → its table. MAE's fine-tuned checkpoints use timm's names; our own format needs no table.
RULES: dict[str, tuple[Rule, ...]] = {
    "timm": TIMM_RULES,
    "mae": TIMM_RULES,
    "hf": HF_RULES,
    "mindformers": MINDFORMERS_RULES,
}


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(re.escape("{i}"), r"(?P<i>\d+)") + "$")


def _fill(template: str, index: str | None) -> str:
    return template.replace("{i}", index) if index is not None else template


def rename_to_ours(source: StateDict, rules: Sequence[Rule]) -> StateDict:
    """Source-format keys → ours. Keys no rule knows, or a fused layer with a part missing, raise
    ``CheckpointMismatch`` naming them in the source's spelling."""
    patterns = [(rule, pos, _pattern(t)) for rule in rules for pos, t in enumerate(rule.theirs)]
    parts: dict[tuple[Rule, str | None], dict[int, np.ndarray]] = {}
    unexpected = []
    for key, value in source.items():
        for rule, pos, pattern in patterns:
            match = pattern.match(key)
            if match:
                parts.setdefault((rule, match.groupdict().get("i")), {})[pos] = value
                break
        else:
            unexpected.append(key)
    out: StateDict = {}
    missing = []
    for (rule, index), found in parts.items():
        absent = [_fill(t, index) for pos, t in enumerate(rule.theirs) if pos not in found]
        if absent:
            missing.extend(absent)
            continue
        out[_fill(rule.ours, index)] = _to_ours(rule.kind, [found[pos] for pos in range(len(rule.theirs))])
    if missing or unexpected:
        raise CheckpointMismatch(sorted(missing), sorted(unexpected), [])
    return out


def rename_to_theirs(state: StateDict, rules: Sequence[Rule]) -> dict[str, np.ndarray]:
    """Our keys → the source format's (the inverse of ``rename_to_ours``). Keys the format has no place
    for raise ``CheckpointMismatch`` (as unexpected)."""
    compiled = [(rule, _pattern(rule.ours)) for rule in rules]
    out: dict[str, np.ndarray] = {}
    unexpected = []
    for key, value in state.items():
        for rule, pattern in compiled:
            match = pattern.match(key)
            if match:
                index = match.groupdict().get("i")
                names = [_fill(t, index) for t in rule.theirs]
                out.update(zip(names, _to_theirs(rule.kind, value, len(names)), strict=True))
                break
        else:
            unexpected.append(key)
    if unexpected:
        raise CheckpointMismatch([], sorted(unexpected), [])
    return out


def _to_ours(kind: Kind, arrays: list[np.ndarray]) -> np.ndarray:
    if kind == "rows":
        return np.concatenate(arrays, axis=0)
    if kind == "transpose":
        return np.ascontiguousarray(arrays[0].T)
    return arrays[0]


def _to_theirs(kind: Kind, array: np.ndarray, count: int) -> list[np.ndarray]:
    if kind == "rows":
        return [np.ascontiguousarray(part) for part in np.split(array, count, axis=0)]
    if kind == "transpose":
        return [np.ascontiguousarray(array.T)]
    return [array]
