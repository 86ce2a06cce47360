"""Benchmark images: generated once per (size, pattern), streamed from disk.

dense   every byte random (incompressible, nothing to skip);
sparse  75% of the objects all zero, 25% random: object i carries data when
        i % 4 == 0, so every 64 MiB chunk has the same mix and a client that
        skips zero objects must find them one by one.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass

MiB = 1 << 20
PATTERNS = ("dense", "sparse")
_WRITE_STEP = 64 * MiB


@dataclass(frozen=True)
class Image:
    path: str
    size: int
    pattern: str
    object_size: int
    md5: str
    nonzero_objects: int  #: objects holding at least one non-zero byte

    @property
    def allocation(self) -> int:
        """Bytes a thin-provisioning upload should own: its non-zero objects
        (sheep accounts whole objects)."""
        return self.nonzero_objects * self.object_size


def object_has_data(pattern: str, index: int) -> bool:
    return pattern == "dense" or index % 4 == 0


def make_image(directory: str, size: int, pattern: str, object_size: int, seed: int = 0) -> Image:
    """Writes the image file (real zeros, not holes: an upload reads them)."""
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {', '.join(PATTERNS)}")
    path = os.path.join(directory, f"image-{pattern}-{size}.raw")
    rng = random.Random(f"{seed}-{pattern}-{size}")  # fast, not for secrets
    md5 = hashlib.md5()
    nonzero = 0
    zeros = bytes(object_size)
    with open(path, "wb") as f:
        for index, offset in enumerate(range(0, size, object_size)):
            n = min(object_size, size - offset)
            if object_has_data(pattern, index):
                piece = rng.randbytes(n)
                nonzero += 1
            else:
                piece = zeros[:n]
            md5.update(piece)
            f.write(piece)
    return Image(path, size, pattern, object_size, md5.hexdigest(), nonzero)


def load(path: str, size: int) -> bytearray:
    """The whole file in one preallocated buffer (outside any timed region)."""
    buf = bytearray(size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        got = 0
        while got < size:
            n = f.readinto(view[got : got + _WRITE_STEP])
            if not n:
                raise EOFError(f"{path} ended at {got} of {size} bytes")
            got += n
    return buf
