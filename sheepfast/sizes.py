"""Sizes as people write them, and as sheepfast prints them.

One parser for every size the command (and the benchmark harness) reads:

* a byte count: ``1048576``;
* a number with a binary unit, one letter or IEC: ``512k``, ``4M``,
  ``1.5G``, ``4MiB``, ``2TiB`` (K = 1024, as in dog, rbd and qemu-img);
  a fraction is fine when it comes to whole bytes (``1.5k`` is 1536);
* ``4MB``, ``1GB`` and the like are refused: dog and rbd read them as
  MiB and GiB, SI says a million and a billion, and a size that is off
  by five percent is worse than an error. The message says what to write.

Sizes are printed with binary units too (``1.5 GiB``).
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["SizeError", "parse_size", "format_size"]

_UNITS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50}
_SIZE = re.compile(
    r"(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>[KMGTP]?)(?P<suffix>i?B?)", re.IGNORECASE
)


class SizeError(ValueError):
    """A size text that is malformed, ambiguous or not a whole number of bytes."""


def parse_size(text: str, what: str = "size") -> int:
    """Bytes in text (see the module's doc); SizeError naming what otherwise."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise SizeError(f"{what}: bad size {text!r} (write e.g. 1048576, 512K, 4M, 1.5G or 4MiB)")
    unit, suffix = m["unit"].upper(), m["suffix"]
    if suffix.lower() == "i" or (suffix.lower() == "ib" and not unit):
        raise SizeError(f"{what}: bad size {text!r} (write e.g. 4M or 4MiB)")
    if suffix.upper() == "B" and unit:
        # 4MB: dog's 4 MiB or SI's 4 000 000? Ask rather than guess.
        n = m["num"]
        raise SizeError(
            f"{what}: {text!r} is ambiguous: write {n}{unit} or {n}{unit}iB for "
            f"{n} x 2^{_UNITS[unit]} bytes, or the byte count"
        )
    value = Fraction(m["num"]) * (1 << _UNITS[unit])
    if value.denominator != 1:
        raise SizeError(f"{what}: {text!r} is not a whole number of bytes ({float(value):g})")
    return int(value)


def format_size(n: float) -> str:
    """Bytes as a person reads them: '512 B', '4.0 MiB', '1.5 GiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"
