"""Random and adversarial locations and addresses.

``sheepdog://addr:port:image`` locations reach the driver from Glance's
database and from users (the Location header); cluster addresses come from
configuration files and the command line. Whatever the text, the driver's
StoreLocation either parses it into something that round-trips (its URI
parses back to the same gateway and image) or raises glance_store's
BadStoreUri; sheepfast.address.parse_address either gives (host, port) that
format_address and parse_address turn back into themselves or raises
InvalidArgument. Never a raw TypeError, ValueError, IndexError or
UnicodeError, and nothing unprintable reaches a socket call or dog's
argument list.
"""

from __future__ import annotations

import os
import string

import pytest

pytest.importorskip("hypothesis")
pytest.importorskip("glance_store")
from glance_store import exceptions  # noqa: E402
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from oslo_config import cfg  # noqa: E402

from sheepfast import errors  # noqa: E402
from sheepfast import glance as driver  # noqa: E402
from sheepfast.address import (  # noqa: E402
    NAME_MAX,
    check_host,
    check_name,
    check_port,
    format_address,
    parse_address,
)

EXAMPLES = int(os.environ.get("SHEEPFAST_FUZZ_EXAMPLES", "300"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("SHEEPFAST_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def make_conf(external: bool) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf(args=[])
    conf.register_opts(driver.OPTIONS, group="glance_store")
    conf.set_override("sheepdog_store_address", "10.0.0.1", group="glance_store")
    conf.set_override(
        "sheepdog_store_extra_addresses", ["[fd00::2]:7001", "sheep3.example"], group="glance_store"
    )
    conf.set_override("sheepdog_store_allow_external_locations", external, group="glance_store")
    return conf


OPEN = make_conf(external=True)  # any gateway: every well-formed location parses
CLOSED = make_conf(external=False)  # only the configured cluster's gateways


def parse(conf, uri):
    loc = driver.StoreLocation({}, conf)
    loc.parse_uri(uri)
    return loc


# ------------------------------------------------------------------ strategies

# characters that mean something to one of the parsers, and some that
# should mean nothing to any of them
_TRICKY = ":[]%.,-_ \t\n\r\x00\x7f/@?#\\'\"0123456789abcdefABCDEF"
_tricky_text = st.text(alphabet=st.sampled_from(list(_TRICKY)), max_size=40)
_any_text = st.text(max_size=40)  # all of Unicode, surrogates excluded
_long_text = st.text(alphabet=string.ascii_letters + ":.-", min_size=200, max_size=600)

_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(str)
_label = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", fullmatch=True)
_hostname = st.lists(_label, min_size=1, max_size=4).map(".".join)

hosts = st.one_of(
    _ipv4,
    _ipv6.map(lambda h: f"[{h}]"),
    _ipv6,
    _hostname,
    _tricky_text,
    _any_text,
    _long_text,
    st.just(""),
    _ipv6.map(lambda h: f"[{h}"),
    _ipv4.map(lambda h: f"[{h}]"),
    st.builds(lambda h, zone: f"[{h}%{zone}]", _ipv6, _tricky_text),  # zone ids
)
ports = st.one_of(
    st.integers(-5, 70000).map(str),
    st.integers(0, 1 << 80).map(str),
    st.sampled_from(
        [
            "",
            "+7000",
            " 7000",
            "7000 ",
            "0x1b58",
            "07000",
            "7e3",
            "\u0667\u0660\u0660\u0660",
            "\uff17\uff10\uff10\uff10",
            "7000\x00",
        ]
    ),
    _tricky_text,
)
images = st.one_of(
    st.uuids().map(str),
    _tricky_text,
    _any_text,
    st.text(min_size=NAME_MAX - 2, max_size=NAME_MAX + 2),
    st.text(alphabet="ab:", min_size=1, max_size=20),
    st.just(""),
    st.just("-rf"),
)


@st.composite
def locations(draw):
    """sheepdog://host:port:image with each part and separator varied,
    or the legacy sheepdog://image, or anything at all after the scheme."""
    shape = draw(st.sampled_from(["full", "full", "full", "legacy", "raw", "prefix"]))
    if shape == "legacy":
        return "sheepdog://" + draw(images)
    if shape == "raw":
        return "sheepdog://" + draw(st.one_of(_tricky_text, _any_text, _long_text))
    if shape == "prefix":
        scheme = draw(
            st.sampled_from(
                [
                    "sheepdog:/",
                    "sheepdog:",
                    "Sheepdog://",
                    "rbd://",
                    "",
                    "sheepdog:///",
                    " sheepdog://",
                ]
            )
        )
        return scheme + draw(images)
    sep1 = draw(st.sampled_from([":", ":", "", "::", "]:"]))
    sep2 = draw(st.sampled_from([":", ":", "", "::"]))
    return f"sheepdog://{draw(hosts)}{sep1}{draw(ports)}{sep2}{draw(images)}"


# ------------------------------------------------------------------ properties


def _reaches_a_socket_safely(host: str) -> None:
    """What check_host promises: nothing unprintable or blank gets through."""
    assert host and host.isprintable() and not any(c.isspace() for c in host), repr(host)


@SETTINGS
@given(uri=locations())
@example(uri="sheepdog://10.0.0.1:7000:a:b::c:")
@example(uri="sheepdog://[fd00::2]:7001:" + "x" * NAME_MAX)
@example(uri="sheepdog://[fd00::2]:7001:" + "x" * (NAME_MAX + 1))
@example(uri="sheepdog://10.0.0.1:99999999999999999999999999:img")
@example(uri="sheepdog://[::1]]:7000:img")
@example(uri="sheepdog://[[::1]]:7000:img")
@example(uri="sheepdog://[::1]:7000:\x00")
@example(uri="sheepdog://10.0.0.1:\u0667\u0660\u0660\u0660:img")
@example(uri="sheepdog://\u00e9.example:7000:img")
@example(uri="sheepdog://" + ":" * 50)
def test_a_location_parses_and_round_trips_or_is_a_bad_store_uri(uri):
    for conf in (OPEN, CLOSED):
        try:
            loc = parse(conf, uri)
        except exceptions.BadStoreUri as exc:
            assert str(exc), "BadStoreUri says what was wrong"
            continue
        assert isinstance(loc.addr, str) and isinstance(loc.image, str)
        assert type(loc.port) is int and 1 <= loc.port <= 65535
        _reaches_a_socket_safely(loc.addr)
        assert check_host(loc.addr) == loc.addr and check_name(loc.image) == loc.image
        assert len(loc.image.encode()) <= NAME_MAX
        again = parse(conf, loc.get_uri())
        assert (again.addr, again.port, again.image) == (loc.addr, loc.port, loc.image)
        built = driver.StoreLocation({"addr": loc.addr, "port": loc.port, "image": loc.image}, conf)
        assert built.get_uri() == loc.get_uri()


@SETTINGS
@given(
    text=st.one_of(
        st.builds(
            lambda h, sep, p: f"{h}{sep}{p}", hosts, st.sampled_from([":", "", "]:", "::"]), ports
        ),
        hosts,
        _tricky_text,
        _any_text,
        _long_text,
    )
)
@example(text="[::1]:7000")
@example(text="::1")
@example(text="[::1]")
@example(text="  10.0.0.1:7000\t")
@example(text="10.0.0.1:7000,10.0.0.2:7000")
@example(text="[fe80::1%eth0]:7000")
def test_an_address_parses_and_round_trips_or_is_invalid(text):
    try:
        host, port = parse_address(text)
    except errors.InvalidArgument as exc:
        assert str(exc)
        return
    assert type(port) is int and 1 <= port <= 65535
    _reaches_a_socket_safely(host)
    assert parse_address(format_address(host, port)) == (host, port)


@SETTINGS
@given(
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.binary(),
        _any_text,
        _tricky_text,
        st.lists(st.integers(), max_size=2),
        st.integers().map(str),
    )
)
def test_checks_refuse_anything_with_invalid_argument(value):
    """check_host, check_port and check_name take any object: a value of
    the right kind back, or InvalidArgument; no other exception."""
    for check in (check_host, check_port, check_name):
        try:
            got = check(value)
        except errors.InvalidArgument as exc:
            assert str(exc)
            continue
        if check is check_port:
            assert type(got) is int and 1 <= got <= 65535
        elif check is check_host:
            _reaches_a_socket_safely(got)
        else:
            assert got == value and 0 < len(got.encode()) <= NAME_MAX


# ------------------------------------------------------------------ found here


@pytest.mark.parametrize("host", ["fe80::1%a b", "fe80::1%\x00", "fe80::1%\n", "fe80::1%eth0\t"])
def test_a_zone_id_with_control_characters_is_refused(host):
    with pytest.raises(errors.InvalidArgument):
        check_host(host)
    with pytest.raises(errors.InvalidArgument):
        parse_address(f"[{host}]:7000")
    with pytest.raises(exceptions.BadStoreUri):
        parse(OPEN, f"sheepdog://[{host}]:7000:img")
