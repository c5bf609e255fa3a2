"""The shipped ImageNet-1k class names."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

from vitserve.vit.labels import IMAGENET_1K_LABELS, imagenet_1k_labels


def test_the_1000_short_names_in_index_order_with_their_repeats():
    labels = IMAGENET_1K_LABELS
    assert len(labels) == 1000 and all(isinstance(n, str) and n for n in labels)
    assert labels[:3] == ["tench", "goldfish", "great white shark"]
    assert labels[134] == labels[517] == "crane"
    assert labels[638] == labels[639] == "maillot"
    assert labels[999] == "toilet tissue"
    assert len(set(labels)) == 998  # exactly the two known repeats


def test_the_names_ship_as_package_data_and_need_no_torchvision():
    text = resources.files("vitserve.vit").joinpath("imagenet_1k_labels.json").read_text(encoding="utf-8")
    assert tuple(json.loads(text)) == imagenet_1k_labels()
    code = "import sys, vit.labels as l; l.imagenet_1k_labels(); print('torchvision' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
