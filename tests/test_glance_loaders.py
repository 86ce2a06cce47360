"""Registration: glance_store and oslo.config find the driver through the
package's entry points, as Glance does, in single- and multi-store mode.

The entry points come from the installed package metadata (pyproject.toml's
[project.entry-points]); run the suite from an installed sheepfast or from
a tree with its metadata built (pip install -e . / pip install .).
"""

from __future__ import annotations

import io
from importlib.metadata import entry_points

import pytest
from glance_store import backend as single_backend
from glance_store import capabilities, exceptions, multi_backend
from glance_store import location as glance_location
from glance_support import (  # noqa: F401  (fixtures)
    MiB,
    image_bytes,
    kind,
    make_multi,
    make_single,
    split_address,
)
from oslo_config import cfg
from stevedore import driver as stevedore_driver

from sheepfast import glance as driver

DRIVER_NAMES = ["sheepdog", "glance.store.sheepdog.Store"]
LEGACY_OPTIONS = {
    "sheepdog_store_address": (cfg.HostAddressOpt, "127.0.0.1"),
    "sheepdog_store_port": (cfg.PortOpt, 7000),
    # same name, type and unit (MiB); the default moved from the removed
    # driver's 64 to 32 so a transfer holds under 100 MiB (two chunks)
    "sheepdog_store_chunk_size": (cfg.IntOpt, 32),
}
NEW_OPTIONS = {
    "sheepdog_store_backend": "auto",
    "sheepdog_store_dog_command": "dog",
    "sheepdog_store_extra_addresses": [],
    "sheepdog_store_connect_timeout": 10.0,
    "sheepdog_store_io_timeout": 60.0,
    "sheepdog_store_io_depth": 16,
    "sheepdog_thin_provisioning": True,
    "sheepdog_store_snapshot_images": False,
    "sheepdog_store_copies": 0,
    "sheepdog_store_object_size": 0,
    "sheepdog_store_allow_external_locations": False,
}


# ---------------------------------------------------------------- entry points


@pytest.mark.parametrize("name", DRIVER_NAMES)
def test_driver_entry_points(name):
    found = [ep for ep in entry_points(group="glance_store.drivers") if ep.name == name]
    assert found, f"no glance_store.drivers entry point {name!r}: is sheepfast installed?"
    assert found[0].value == "sheepfast.glance:Store"
    manager = stevedore_driver.DriverManager("glance_store.drivers", name, invoke_on_load=False)
    assert manager.driver is driver.Store


def test_oslo_config_opts_entry_point():
    found = [ep for ep in entry_points(group="oslo.config.opts") if ep.name == "sheepfast.glance"]
    assert found and found[0].value == "sheepfast.glance:list_opts"
    groups = found[0].load()()
    assert [group for group, _ in groups] == ["glance_store"]
    assert {o.name for o in groups[0][1]} == set(LEGACY_OPTIONS) | set(NEW_OPTIONS)


def test_glance_store_lists_the_options():
    """glance_store's own option listings (used by oslo-config-generator for
    glance-api.conf) include the driver's, found through the entry point."""
    ((group, driver_opts),) = [
        (g, o)
        for g, o in single_backend._list_opts()
        if any(opt.name == "sheepdog_store_address" for opt in o)
    ]
    assert group == "glance_store"
    names = {o.name for o in driver_opts}
    assert set(LEGACY_OPTIONS) <= names and set(NEW_OPTIONS) <= names
    # keyed by the first entry point name in sorted order; register_store_opts
    # matches "sheepdog" against it as a substring, as for the built-in drivers
    per_driver = {k: v for k, v in multi_backend._list_driver_opts().items() if "sheepdog" in k}
    assert len(per_driver) == 1
    assert {o.name for o in per_driver.popitem()[1]} == set(LEGACY_OPTIONS) | set(NEW_OPTIONS)


def test_sample_config_has_the_help_text(tmp_path):
    from oslo_config import generator

    out = tmp_path / "sample.conf"
    conf = cfg.ConfigOpts()
    generator.register_cli_opts(conf)
    conf(args=["--namespace", "sheepfast.glance", "--output-file", str(out)])
    generator.generate(conf)
    text = out.read_text()
    for name in list(LEGACY_OPTIONS) + list(NEW_OPTIONS):
        assert f"\n#{name} =" in text, name
    assert "Possible values" in text and "sheepdog_store_allow_external_locations" in text


def test_options_keep_the_removed_drivers_names_and_meanings():
    opts = {o.name: o for o in driver.OPTIONS}
    for name, (opt_type, default) in LEGACY_OPTIONS.items():
        assert isinstance(opts[name], opt_type)
        assert opts[name].default == default
    for name, default in NEW_OPTIONS.items():
        assert opts[name].default == default, name
    for opt in driver.OPTIONS:
        assert len(opt.help.strip()) > 100, opt.name  # full help text
    assert driver.Store.OPTIONS is driver.OPTIONS
    assert driver.Store.EXAMPLE_URL == "sheepdog://addr:port:image"


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("entry", DRIVER_NAMES)
def test_single_store_loads_by_either_name(monkeypatch, target, kind, entry, new_name):
    g = make_single(monkeypatch, target, kind, stores=[entry])
    store = single_backend.get_store_from_scheme("sheepdog")
    assert isinstance(store, driver.Store)
    assert single_backend.get_store_from_scheme("sheepdog") is store  # reusable
    assert store.is_capable(capabilities.BitMasks.READ_RANDOM, capabilities.BitMasks.WRITE_ACCESS)
    image_id = new_name("sf-load")
    uri = single_backend.add_to_backend(g.conf, image_id, io.BytesIO(b"abc"), 3, scheme="sheepdog")[
        0
    ]
    assert glance_location.get_location_from_uri(uri, conf=g.conf).store_name == "sheepdog"
    assert single_backend.get_size_from_backend(uri) == 3
    single_backend.delete_from_backend(uri)


def test_two_sheepdog_backends_with_their_own_settings(
    monkeypatch, tmp_path, target, kind, new_name
):
    """enabled_backends with two Sheepdog stores: each reads its own group,
    then [backend_defaults]."""
    host, port = split_address(target.address)
    conf_file = tmp_path / "glance-api.conf"
    extra = ""
    if kind == "cli":
        from glance_support import dog_command

        extra = (
            f"sheepdog_store_backend = cli\nsheepdog_store_dog_command = {dog_command(target)}\n"
        )
    conf_file.write_text(
        "[DEFAULT]\nenabled_backends = big:sheepdog, small:sheepdog\n"
        "[glance_store]\ndefault_backend = big\n"
        f"[backend_defaults]\nsheepdog_store_address = {host}\n"
        f"sheepdog_store_port = {port}\nsheepdog_store_chunk_size = 8\n{extra}"
        "[big]\nstore_description = big objects\nsheepdog_store_object_size = 8\n"
        "[small]\nsheepdog_store_object_size = 1\nsheepdog_store_chunk_size = 1\n"
        "sheepdog_thin_provisioning = false\n"
    )
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.DictOpt("enabled_backends"))
    conf(args=["--config-file", str(conf_file)])
    for name, value in ((n, {}) for n in ("SCHEME_TO_CLS_MAP", "SCHEME_TO_CLS_BACKEND_MAP")):
        monkeypatch.setattr(glance_location, name, value)
    monkeypatch.setattr(multi_backend, "CONF", conf)
    multi_backend.register_store_opts(conf)
    multi_backend.create_multi_stores(conf)
    big = multi_backend.get_store_from_store_identifier("big")
    small = multi_backend.get_store_from_store_identifier("small")
    assert big is not small
    assert (big.WRITE_CHUNKSIZE, small.WRITE_CHUNKSIZE) == (8 * MiB, 1 * MiB)
    assert (big.block_size_shift, small.block_size_shift) == (23, 20)
    assert (big.thin_provisioning, small.thin_provisioning) == (True, False)
    assert big.backend_kind == small.backend_kind == kind
    import sheepfast

    for backend_name, object_size in (("big", 8 * MiB), ("small", MiB)):
        image_id = new_name("sf-two")
        data = image_bytes(MiB + 1)
        uri, size, _, _, meta = multi_backend.add_with_multihash(
            conf, image_id, io.BytesIO(data), len(data), backend_name, "sha256"
        )
        assert meta == {"store": backend_name}
        with sheepfast.connect(target.address) as c:
            assert c.stat(image_id).object_size == object_size
        it, n = multi_backend.get(uri, backend_name)
        assert b"".join(it) == data
        multi_backend.delete(uri, backend_name)


def test_bad_configuration_disables_add_and_sends_nothing(monkeypatch, tmp_path, target):
    g = make_multi(
        monkeypatch, tmp_path, target, "cli", sheepdog_store_dog_command="/nonexistent/dog"
    )
    store = g.store
    assert not store.is_capable(capabilities.BitMasks.WRITE_ACCESS)
    with pytest.raises(exceptions.StoreAddDisabled):
        g.add("img", io.BytesIO(b"x"), 1)
    with pytest.raises(exceptions.BackendException, match="not found"):
        g.get_size("sheepdog://img")


def test_native_backend_required_but_missing(monkeypatch, tmp_path, target):
    from sheepfast import backends

    monkeypatch.setattr(backends, "native_import_error", lambda: ImportError("hidden"))
    g = make_multi(monkeypatch, tmp_path, target, "native")
    assert not g.store.is_capable(capabilities.BitMasks.WRITE_ACCESS)
    with pytest.raises(exceptions.BackendException, match="extension"):
        g.get_size("sheepdog://img")


@pytest.mark.parametrize(
    "option, value",
    [
        ("sheepdog_store_object_size", 3),  # not a power of two
        ("sheepdog_store_extra_addresses", "host:notaport"),
        ("sheepdog_store_backend", "ssh"),
    ],
)
def test_invalid_option_values_are_bad_configuration(monkeypatch, tmp_path, target, option, value):
    g = make_multi(monkeypatch, tmp_path, target, "native", **{option: value})
    assert not g.store.is_capable(capabilities.BitMasks.WRITE_ACCESS)
    with pytest.raises(exceptions.StoreAddDisabled):
        g.add("img", io.BytesIO(b"x"), 1)


def test_configure_does_not_connect(monkeypatch, tmp_path, target):
    """Glance starts while the cluster is down; the first request says so."""
    g = make_multi(
        monkeypatch,
        tmp_path,
        target,
        "native",
        sheepdog_store_port=1,
        sheepdog_store_connect_timeout=2.0,
    )
    assert g.store.is_capable(capabilities.BitMasks.WRITE_ACCESS)
    with pytest.raises(exceptions.BackendException):
        g.add("img", io.BytesIO(b"x"), 1)
