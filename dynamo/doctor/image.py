"""The matrix cell of the image this process runs in, as `build.py` baked it into the image's
environment: the doctor and the preflight judge that cell, whatever version our package says (an
image of release 1.2.1 built from a newer checkout carries a newer package)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from dynamo.frozen import Frozen

RELEASE, FRAMEWORK, DEVICE = "DYN_IMAGE_RELEASE", "DYN_IMAGE_FRAMEWORK", "DYN_IMAGE_DEVICE"


class ImageCell(Frozen):
    release: str
    framework: str
    device: str  # the doctor's spelling: "13.0" or "cpu"


def baked(environ: Mapping[str, str] = os.environ) -> ImageCell | None:
    """The image's cell, or None outside one of our images (or in one built before cells were baked)."""
    release, framework, device = (environ.get(name, "").strip() for name in (RELEASE, FRAMEWORK, DEVICE))
    if not (release and framework and device):
        return None
    return ImageCell(release, framework, device.removeprefix("cuda"))
