"""Gateway addresses, VDI names and image locations: how each is written.

* an address: ``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` (a bare
  IPv6 address, with more than one ':', is taken whole); the port defaults
  to 7000 (:data:`sheepfast.defaults.DEFAULT_PORT`);
* a cluster: addresses separated by commas, ``a:7000,b:7001,[fd00::3]``;
* a location: ``sheepdog://addr:port:image`` (``sheepdog://[v6]:port:image``;
  the image name may itself contain ':'), or the legacy ``sheepdog://image``,
  which means the configured cluster.

The glance_store driver, the image API, the dog backend and the command all
parse and format them here. Everything refused raises
:class:`~sheepfast.errors.InvalidArgument` saying what was wrong; nothing
unprintable or blank gets through to a socket call or to dog's arguments.
(The C client parses the address list it is given itself, more leniently:
it takes any host name getaddrinfo takes.)
"""

from __future__ import annotations

import ipaddress
import operator
import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple, Union

from sheepfast.defaults import DEFAULT_PORT, NAME_MAX
from sheepfast.errors import InvalidArgument

__all__ = [
    "DEFAULT_PORT",
    "EXAMPLE_LOCATION",
    "LOCATION_PREFIX",
    "Location",
    "NAME_MAX",
    "SCHEME",
    "check_host",
    "check_name",
    "check_port",
    "format_address",
    "format_addresses",
    "format_location",
    "gateway_key",
    "parse_address",
    "parse_addresses",
    "parse_location",
    "split_addresses",
    "whole_number",
]

SCHEME = "sheepdog"
LOCATION_PREFIX = SCHEME + "://"
EXAMPLE_LOCATION = "sheepdog://addr:port:image"

_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
# An IPv6 zone id: an interface name or index (IFNAMSIZ - 1 characters).
_ZONE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
# What the C parser trims around each address of a list.
_LIST_BLANKS = " \t"


def whole_number(value: object, what: str) -> int:
    """value as an int if it is one (bool is not), else InvalidArgument."""
    if isinstance(value, bool):
        raise InvalidArgument(f"{what} must be a number (got {value!r})")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidArgument(f"{what} must be a whole number (got {value!r})") from None


def check_name(name: object) -> str:
    """name if it is a VDI name sheepfast will use, else InvalidArgument.

    Stricter than sheep (which takes any bytes but NUL): names end up in
    URIs, logs and, with the command-line backend, in dog's argument list
    and its space-separated output, so they must be printable, without
    white space, and must not start with '-' (which dog would read as an
    option).
    """
    if not isinstance(name, str):
        raise InvalidArgument(f"VDI name must be a str, not {type(name).__name__}")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"VDI name {name!r} is not valid Unicode") from None
    if not raw:
        raise InvalidArgument("VDI name is empty")
    if len(raw) > NAME_MAX:
        raise InvalidArgument(f"VDI name is longer than {NAME_MAX} bytes ({len(raw)})")
    if not name.isprintable() or any(c.isspace() for c in name):
        raise InvalidArgument(f"VDI name {name!r} contains white space or control characters")
    if name.startswith("-"):
        raise InvalidArgument(f"VDI name {name!r} starts with '-'")
    return name


def check_host(host: object) -> str:
    """host (an IPv4 or IPv6 address, without brackets, or a DNS name) if it
    is well formed, else InvalidArgument. Nothing else can reach a socket
    call or dog's -a option."""
    if not isinstance(host, str) or not host:
        raise InvalidArgument(f"host must be a non-empty str (got {host!r})")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        # ipaddress takes any zone id after '%'; an interface name is all it can be
        zone = host.partition("%")[2]
        if "%" not in host or _ZONE_ID.fullmatch(zone):
            return host
        raise InvalidArgument(f"{host!r}: the zone id {zone!r} is not an interface name")
    if _HOSTNAME.fullmatch(host) is None:
        raise InvalidArgument(f"{host!r} is neither an IP address nor a host name")
    return host


def check_port(port: object) -> int:
    """port (an int, or a str of digits) if it is 1..65535, else InvalidArgument."""
    if isinstance(port, str):
        if not port.isdigit() or not port.isascii():
            raise InvalidArgument(f"port must be a number (got {port!r})")
        port = int(port)
    value = whole_number(port, "port")
    if not 1 <= value <= 65535:
        raise InvalidArgument(f"port must be 1..65535 (got {port!r})")
    return value


def _split_host(text: str) -> Tuple[str, Optional[str], Optional[str]]:
    """(host, port, rest) from "host:port:rest" or "[v6]:port:rest"; port is
    None without a ':' after the host, rest None without a ':' after the
    port. An IPv6 address is the only host that goes in brackets; the host
    is not checked otherwise."""
    if text.startswith("["):
        host, bracket, tail = text[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise InvalidArgument(f"malformed address {text!r}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidArgument(
                f"{host!r} in {text!r} is not an IPv6 address (only one goes in brackets)"
            ) from None
        if not tail:
            return host, None, None
        tail = tail[1:]
    else:
        host, colon, tail = text.partition(":")
        if not colon:
            return host, None, None
    port, colon, rest = tail.partition(":")
    return host, port, rest if colon else None


def format_address(host: str, port: int) -> str:
    """ "host:port", with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> Tuple[str, int]:
    """(host, port) from "host", "host:port", "[v6]" or "[v6]:port"; a bare
    IPv6 address (more than one ':') is taken whole. InvalidArgument if
    malformed."""
    if not isinstance(text, str):
        raise InvalidArgument(f"address must be a str (got {text!r})")
    text = text.strip()
    host, port = text, None
    if text.startswith("[") or text.count(":") == 1:
        host, port, _ = _split_host(text)
    return check_host(host), check_port(default_port if port is None else port)


def split_addresses(addresses: Union[str, Sequence[str]]) -> list[str]:
    """The addresses of a cluster, "a:7000, b , [v6]:7001" (or a sequence of
    them), trimmed, empty ones skipped; InvalidArgument if none is left."""
    if not isinstance(addresses, str):
        if not all(isinstance(a, str) for a in addresses):
            raise InvalidArgument(f"cluster addresses must be str (got {addresses!r})")
        addresses = ",".join(addresses)
    items = [item.strip(_LIST_BLANKS) for item in addresses.split(",")]
    items = [item for item in items if item]
    if not items:
        raise InvalidArgument("cluster address must be 'host:port[,host:port...]'")
    return items


def parse_addresses(addresses: Union[str, Sequence[str]]) -> list[Tuple[str, int]]:
    """(host, port) of each gateway in "host:port,[v6]:port,host,..."; the
    port defaults to DEFAULT_PORT. InvalidArgument naming the address that
    is malformed."""
    gateways = []
    for item in split_addresses(addresses):
        try:
            gateways.append(parse_address(item))
        except InvalidArgument as exc:
            raise InvalidArgument(
                f"bad cluster address '{item[:200]}' (want host:port): {exc}"
            ) from None
    return gateways


def format_addresses(gateways: Iterable[Tuple[str, int]]) -> str:
    """ "a:7000,[v6]:7001" for [(host, port), ...]."""
    return ",".join(format_address(host, port) for host, port in gateways)


def gateway_key(host: str, port: int) -> Tuple[str, int]:
    """How two gateway addresses are compared: IPs in canonical form, names
    case-folded (no DNS: 'localhost' is not '127.0.0.1')."""
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        host = host.lower().rstrip(".")
    return host, int(port)


@dataclass(frozen=True)
class Location:
    """An image location. host and port are None in the legacy form
    (``sheepdog://image``: the configured cluster)."""

    host: Optional[str]
    port: Optional[int]
    image: str

    @property
    def legacy(self) -> bool:
        return self.host is None


def parse_location(uri: str) -> Location:
    """The Location in "sheepdog://addr:port:image", "sheepdog://[v6]:port:image"
    or the legacy "sheepdog://image"; InvalidArgument saying what is wrong.

    The host and port are taken from the left; everything after the port's
    ':' is the image name, which may contain ':'. A legacy name cannot
    contain ':' or start with '['.
    """
    if not isinstance(uri, str):
        raise InvalidArgument(f"a location is a str, not {type(uri).__name__}")
    if not uri.startswith(LOCATION_PREFIX):
        raise InvalidArgument(f"a location starts with {LOCATION_PREFIX!r}")
    rest = uri[len(LOCATION_PREFIX) :]
    if ":" not in rest and not rest.startswith("["):
        return Location(None, None, check_name(rest))
    shape = f"expected {EXAMPLE_LOCATION} or {LOCATION_PREFIX}image"
    try:
        host, port, image = _split_host(rest)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{shape} ({exc})") from None
    if port is None or image is None:
        raise InvalidArgument(shape)
    return Location(check_host(host), check_port(port), check_name(image))


def format_location(host: str, port: int, image: str) -> str:
    """ "sheepdog://host:port:image", with an IPv6 address in brackets."""
    return f"{LOCATION_PREFIX}{format_address(host, port)}:{image}"
