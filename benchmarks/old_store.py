"""The removed driver's algorithm (benchmarks/old_driver.py) as a
glance_store driver, so the Glance load benchmark can put it beside
sheepfast's store in the same Glance. Lives in benchmarks/ only: the
benchmark makes it loadable by writing an entry point
(glance_store.drivers: oldsheep) into a directory on the API's PYTHONPATH.

Locations: oldsheep://ADDR:PORT:IMAGE_ID.
"""

from __future__ import annotations

import shutil

import glance_store.driver
import glance_store.location
from glance_store import capabilities, exceptions
from oslo_config import cfg

from benchmarks import old_driver

ENTRY_POINT = "oldsheep"

OPTIONS = [
    cfg.StrOpt("oldsheep_address", default="127.0.0.1"),
    cfg.PortOpt("oldsheep_port", default=7000),
    cfg.IntOpt("oldsheep_chunk_size", default=old_driver.CHUNK_SIZE >> 20, help="MiB"),
    cfg.StrOpt("oldsheep_dog", default="dog"),
]


class StoreLocation(glance_store.location.StoreLocation):
    def process_specs(self) -> None:
        self.addr = self.specs.get("addr")
        self.port = self.specs.get("port")
        self.image = self.specs.get("image")

    def get_uri(self) -> str:
        return f"oldsheep://{self.addr}:{self.port}:{self.image}"

    def parse_uri(self, uri: str) -> None:
        if not uri.startswith("oldsheep://"):
            raise exceptions.BadStoreUri(message=f"not an oldsheep URI: {uri}")
        self.addr, port, self.image = uri[len("oldsheep://") :].rsplit(":", 2)
        self.port = int(port)


class Store(glance_store.driver.Store):
    _CAPABILITIES = capabilities.BitMasks.RW_ACCESS | capabilities.BitMasks.DRIVER_REUSABLE
    OPTIONS = OPTIONS

    def get_schemes(self) -> tuple[str, ...]:
        return ("oldsheep",)

    def configure_add(self) -> None:
        c = getattr(self.conf, self.backend_group)
        self.addr = c.oldsheep_address
        self.port = c.oldsheep_port
        self.chunk_size = c.oldsheep_chunk_size << 20
        dog = shutil.which(c.oldsheep_dog)
        if dog is None:
            raise exceptions.BadStoreConfiguration(
                store_name="oldsheep", reason=f"{c.oldsheep_dog}: not found"
            )
        self.dog = dog

    def _image(self, name: str) -> old_driver.OldImage:
        return old_driver.OldImage(self.dog, self.addr, self.port, name, self.chunk_size)

    @capabilities.check
    def get(self, location, offset=0, chunk_size=None, context=None):
        image = self._image(location.store_location.image)
        try:
            return old_driver.get(image)
        except FileNotFoundError as exc:
            raise exceptions.NotFound(message=str(exc)) from exc

    def get_size(self, location, context=None) -> int:
        image = self._image(location.store_location.image)
        if not image.exists():
            raise exceptions.NotFound(message=f"image {image.name} does not exist")
        return image.size()

    @glance_store.driver.back_compat_add
    @capabilities.check
    def add(self, image_id, image_file, image_size, hashing_algo, context=None, verifier=None):
        image = self._image(image_id)
        try:
            size, md5, mh = old_driver.add(image, image_file, image_size, hashing_algo)
        except FileExistsError as exc:
            raise exceptions.Duplicate(message=str(exc)) from exc
        location = StoreLocation(
            {"addr": self.addr, "port": self.port, "image": image_id}, self.conf
        )
        return location.get_uri(), size, md5, mh, {"store": self.backend_group}

    @capabilities.check
    def delete(self, location, context=None) -> None:
        image = self._image(location.store_location.image)
        if not image.exists():
            raise exceptions.NotFound(message=f"image {image.name} does not exist")
        image.delete()
