"""The algorithm of glance_store's removed Sheepdog driver, rebuilt from its
description to measure against (not a copy of its code).

What it did, and what this module does the same way:

* every operation is one ``collie vdi ...`` process (``dog`` is collie's
  current name) started through oslo.concurrency's ``processutils.execute``,
  with ``-a ADDR -p PORT NAME`` and the operation's arguments;
* add: ``vdi list -r NAME`` to refuse an existing image, ``vdi create NAME
  SIZE``, then for each 64 MiB chunk read from the upload (glance_store's
  ``chunkreadable``): ``vdi resize NAME OFFSET+LEN`` first when the size was
  unknown (0), then ``vdi write NAME OFFSET LEN`` with the chunk on stdin;
  md5 (the Glance checksum) and the multihash algorithm over every chunk; on
  any failure ``vdi delete NAME``;
* get: ``vdi list -r NAME`` (exists?), ``vdi list -r NAME`` (size, the 4th
  field), and the iterator asks the size once more, then ``vdi read NAME
  OFFSET LEN`` per chunk, each chunk returned as one bytes object.

One deliberate difference: output is requested as bytes (``binary=True``).
The driver predates Python 3 and called ``execute`` without it, which now
decodes every chunk into a str (slower, and not what Glance can send), so the
figures here flatter the old driver slightly.
"""

from __future__ import annotations

import hashlib
from typing import Iterator, Optional

CHUNK_SIZE = 64 << 20  # sheepdog_store_chunk_size's default, 64 MiB


class OldImage:
    """One image, driven one ``dog vdi`` process per call."""

    def __init__(self, dog: str, addr: str, port: int, name: str, chunk_size: int = CHUNK_SIZE):
        self.dog = dog
        self.addr = addr
        self.port = port
        self.name = name
        self.chunk_size = chunk_size

    def _run(self, command: str, data: Optional[bytes], *params: str) -> bytes:
        from oslo_concurrency import processutils

        cmd = [
            self.dog,
            "vdi",
            *command.split(" "),
            "-a",
            self.addr,
            "-p",
            str(self.port),
            self.name,
            *params,
        ]
        return processutils.execute(*cmd, process_input=data, binary=True)[0]

    def exists(self) -> bool:
        return bool(self._run("list -r", None))

    def size(self) -> int:
        return int(self._run("list -r", None).split(b" ")[3])

    def create(self, size: int) -> None:
        self._run("create", None, str(size))

    def resize(self, size: int) -> None:
        self._run("resize", None, str(size))

    def write(self, data: bytes, offset: int, count: int) -> None:
        self._run("write", data, str(offset), str(count))

    def read(self, offset: int, count: int) -> bytes:
        return self._run("read", None, str(offset), str(count))

    def delete(self) -> None:
        self._run("delete", None)


def add(
    image: OldImage, image_file, image_size: int, hashing_algo: str = "sha512"
) -> tuple[int, str, str]:
    """Stores image_file; returns (bytes written, md5 hex, multihash hex)."""
    from glance_store.common.utils import chunkreadable

    if image.exists():
        raise FileExistsError(f"image {image.name} already exists")
    image.create(image_size)
    try:
        offset = 0
        multihash = hashlib.new(hashing_algo)
        checksum = hashlib.md5()
        for chunk in chunkreadable(image_file, image.chunk_size):
            n = len(chunk)
            if image_size == 0:
                image.resize(offset + n)
            image.write(chunk, offset, n)
            offset += n
            multihash.update(chunk)
            checksum.update(chunk)
    except BaseException:
        image.delete()
        raise
    return offset, checksum.hexdigest(), multihash.hexdigest()


def get(image: OldImage) -> tuple[Iterator[bytes], int]:
    """(chunk iterator, size), as the driver's Store.get returned them."""
    if not image.exists():
        raise FileNotFoundError(f"image {image.name} does not exist")
    return _chunks(image), image.size()


def _chunks(image: OldImage) -> Iterator[bytes]:
    total = left = image.size()
    while left > 0:
        data = image.read(total - left, min(image.chunk_size, left))
        left -= len(data)
        yield data
