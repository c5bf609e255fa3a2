"""Peak memory of decoding the worst images the caps allow, measured in a fresh process per image.

The documented bound (README, "Limits and hardening"): decoding and transforming one image peaks at no more than
``BYTES_PER_PIXEL`` bytes per pixel of the pixel cap, whatever its pixel mode (16-bit, alpha, 32-bit modes get
fewer pixels: ``vit.decode.pixel_limit``).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

BYTES_PER_PIXEL = 10
MAX_PIXELS = 40_000_000  # the default cap

# VmHWM (the peak RSS of this process image), not ru_maxrss: Linux carries ru_maxrss over from the parent
# across fork and exec, which would hide the child's own peak behind the test process's.
_MEASURE = """
import sys
from vitserve.vit.config import DataConfig
from vitserve.vit.decode import DecodeLimits, decode_image
from vitserve.vit.preprocess import transform
def peak():
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
data = open(sys.argv[1], "rb").read()
before = peak()
transform(decode_image(data, limits=DecodeLimits(), target_size=256), DataConfig(img_size=224))
print(peak() - before)
"""


def peak_growth(path: Path) -> int:
    """Bytes the peak RSS grew by while one process decoded and transformed ``path``."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "name, make",
    [
        ("16-bit grey 40 MP", lambda: Image.fromarray(np.zeros((5000, 8000), np.uint16))),
        ("RGBA 30 MP", lambda: Image.new("RGBA", (6000, 5000), (10, 20, 30, 100))),
    ],
)
def test_worst_allowed_image_stays_within_the_documented_bound(tmp_path: Path, name: str, make: object) -> None:
    image = make()  # type: ignore[operator]
    path = tmp_path / "worst.png"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    del image, buffer
    growth = peak_growth(path)
    assert growth <= BYTES_PER_PIXEL * MAX_PIXELS, f"{name}: +{growth / 2**20:.0f} MiB"
