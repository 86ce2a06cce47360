"""sheepfast.address: one parser and formatter for addresses and locations.

(The fuzz tests in test_fuzz_locations.py throw random text at the same
functions; these pin the forms down.)
"""

from __future__ import annotations

import pytest

import sheepfast
from sheepfast import address, errors, image
from sheepfast.address import (
    Location,
    format_address,
    format_addresses,
    format_location,
    gateway_key,
    parse_address,
    parse_addresses,
    parse_location,
    split_addresses,
)
from sheepfast.backends import dog


@pytest.mark.parametrize(
    "text, host, port",
    [
        ("10.0.0.1", "10.0.0.1", 7000),
        ("10.0.0.1:7001", "10.0.0.1", 7001),
        ("[::1]", "::1", 7000),
        ("[fd00::2]:7002", "fd00::2", 7002),
        ("::1", "::1", 7000),
        ("sheep.example.org:1", "sheep.example.org", 1),
        (" host ", "host", 7000),
        ("[fe80::1%eth0]:7000", "fe80::1%eth0", 7000),
    ],
)
def test_parse_address(text, host, port):
    assert parse_address(text) == (host, port)
    assert parse_address(format_address(host, port)) == (host, port)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":7000",
        "host:",
        "host:0",
        "host:65536",
        "host:x",
        "[::1",
        "[::1]x",
        "[host]:7000",
        "[10.0.0.1]:7000",
        "-a:7000",
        "a b:7000",
        "host:+1",
        "under_score:7000",
    ],
)
def test_bad_addresses(text):
    with pytest.raises(errors.InvalidArgument):
        parse_address(text)


def test_the_default_port_is_the_c_clients():
    assert parse_address("h") == ("h", sheepfast.defaults.DEFAULT_PORT) == ("h", 7000)
    assert parse_address("h", default_port=7005) == ("h", 7005)


def test_address_lists():
    text = "a, b:7001 ,[::1]:7002,[fe80::1],::1,"
    pairs = [("a", 7000), ("b", 7001), ("::1", 7002), ("fe80::1", 7000), ("::1", 7000)]
    assert split_addresses(text) == ["a", "b:7001", "[::1]:7002", "[fe80::1]", "::1"]
    assert parse_addresses(text) == pairs
    assert parse_addresses(["a", "b:7001"]) == pairs[:2]
    assert format_addresses(pairs) == "a:7000,b:7001,[::1]:7002,[fe80::1]:7000,[::1]:7000"
    assert parse_addresses(format_addresses(pairs)) == pairs


@pytest.mark.parametrize("text", ["", " , ", "\t"])
def test_an_empty_address_list_is_refused(text):
    with pytest.raises(errors.InvalidArgument, match="host:port"):
        parse_addresses(text)


def test_a_bad_address_in_a_list_is_named():
    with pytest.raises(errors.InvalidArgument, match=r"bad cluster address 'b:x'.*port"):
        parse_addresses("a:7000,b:x")


def test_the_dog_backend_refuses_addresses_as_the_native_one_does():
    # one parser; the classes are the C client's (a malformed address is a
    # resolve error there, ConnectionError with EINVAL)
    assert dog.parse_addresses("a,[::1]:7001") == parse_addresses("a,[::1]:7001")
    with pytest.raises(errors.ConnectionError, match="bad cluster address 'h:0'") as caught:
        dog.parse_addresses("a,h:0")
    assert caught.value.errno == 22
    with pytest.raises(errors.InvalidArgument):
        dog.parse_addresses(" ")


def test_gateway_keys_compare_canonical_forms():
    assert gateway_key("::0001", 7000) == gateway_key("::1", 7000)
    assert gateway_key("Sheep.Example.", 7000) == gateway_key("sheep.example", 7000)
    assert gateway_key("localhost", 7000) != gateway_key("127.0.0.1", 7000)
    assert gateway_key("a", 7000) != gateway_key("a", 7001)


@pytest.mark.parametrize(
    "uri, location",
    [
        ("sheepdog://10.0.0.1:7000:img", Location("10.0.0.1", 7000, "img")),
        ("sheepdog://[fd00::2]:7001:a:b", Location("fd00::2", 7001, "a:b")),
        ("sheepdog://host.example:1:x:", Location("host.example", 1, "x:")),
        ("sheepdog://img", Location(None, None, "img")),
    ],
)
def test_parse_location(uri, location):
    assert parse_location(uri) == location
    assert location.legacy == (location.host is None)
    if not location.legacy:
        assert format_location(location.host, location.port, location.image) == uri


@pytest.mark.parametrize(
    "uri, reason",
    [
        ("rbd://img", "starts with"),
        ("sheepdog://", "empty"),
        ("sheepdog://host:7000", "expected"),
        ("sheepdog://host:7000:", "empty"),
        ("sheepdog://[::1]:img", "port"),
        ("sheepdog://[10.0.0.1]:7000:img", "IPv6"),
        ("sheepdog://[::1]", "expected"),
        ("sheepdog://[::1]x:7000:img", "malformed"),
        ("sheepdog://host:0:img", "1..65535"),
        ("sheepdog://-x:7000:img", "host name"),
        ("sheepdog://h:7000:-rf", "starts with '-'"),
    ],
)
def test_bad_locations_say_what_is_wrong(uri, reason):
    with pytest.raises(errors.InvalidArgument, match=reason):
        parse_location(uri)


def test_image_keeps_the_names_the_command_imports():
    # sheepfast/cli.py imports these from sheepfast.image until it switches
    for name in ("parse_address", "format_address", "check_name", "check_host", "check_port"):
        assert getattr(image, name) is getattr(address, name)
    assert image.DEFAULT_PORT == address.DEFAULT_PORT
