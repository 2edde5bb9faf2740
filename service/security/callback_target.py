"""Where a callback may go: host normalisation and the public-address check (submit and delivery).

A callback URL names a host the *service* connects to, so a tenant could aim it at the service's
own network (SSRF). The same rules apply when the URL is submitted (:func:`host_refusal`, no DNS)
and when the worker delivers (:func:`resolve_public`, DNS once; the worker then connects to the
checked address, so a second, different answer — DNS rebinding — is never used):

* the host is normalised first (:func:`normalise_host`): case, surrounding brackets, trailing
  dots (``localhost.``), IPv6 zone ids, IPv4-mapped IPv6 (``::ffff:127.0.0.1``) and the
  shorthand IPv4 forms ``inet_aton`` accepts (``2130706433``, ``0177.0.0.1``, ``0x7f.1``);
* ``localhost`` and ``*.localhost``/``*.local``/``*.internal`` names are refused;
* an address must be global unicast (not loopback, private, link-local, shared, reserved,
  documentation or multicast); every address a name resolves to must be;
* a name that does not resolve is refused (not let through to a second lookup).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Sequence[Any]]  # socket.getaddrinfo's signature and answer
LOCAL_SUFFIXES = (".localhost", ".local", ".internal")
SHORT_IPV4_RE = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}")


class CallbackTargetRefused(ValueError):
    """The callback URL's host is not a public address (the message says why; no secret)."""


def normalise_host(host: str) -> str:
    """``host`` in one canonical form: lower case, no brackets, trailing dots or zone id, IPv4
    shorthand and IPv4-mapped IPv6 written as a dotted quad, IPv6 compressed."""
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    name = name.rstrip(".")
    literal = name.split("%", 1)[0]
    if SHORT_IPV4_RE.fullmatch(literal):
        try:
            return socket.inet_ntoa(socket.inet_aton(literal))
        except OSError:
            return name  # not an address after all (e.g. a 5-part name)
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        return name
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def address_refusal(address: IPAddress) -> str | None:
    """Why a callback must not connect to ``address``, or None if it is global unicast."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_multicast or not address.is_global:
        return "the host is a private, local or reserved address"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` (normalised) is written as, or None for a name."""
    try:
        return ipaddress.ip_address(normalise_host(host))
    except ValueError:
        return None


def host_refusal(host: str) -> str | None:
    """Why a callback URL naming ``host`` is refused without resolving it (submit time), or None.

    Names are only checked against the local suffixes here; their addresses are checked when the
    callback is delivered (:func:`resolve_public`).
    """
    name = normalise_host(host)
    if not name:
        return "the URL names no host"
    if name == "localhost" or name.endswith(LOCAL_SUFFIXES):
        return "the host is a local name"
    address = literal_address(name)
    return address_refusal(address) if address is not None else None


def resolve_public(
    host: str, port: int, *, allow_private: bool = False, resolver: Resolver | None = None
) -> IPAddress:
    """The one address a callback to ``host:port`` connects to, checked.

    Resolves once (``resolver``, default ``socket.getaddrinfo``); raises
    :class:`CallbackTargetRefused` if the host is refused by :func:`host_refusal`, does not
    resolve, or resolves to any non-public address (unless ``allow_private``, for development).
    """
    name = normalise_host(host)
    if not allow_private:
        reason = host_refusal(name)
        if reason:
            raise CallbackTargetRefused(reason)
    address = literal_address(name)
    if address is not None:
        return address
    lookup = resolver or socket.getaddrinfo
    try:
        infos = lookup(name, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise CallbackTargetRefused("the host does not resolve") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise CallbackTargetRefused("the host does not resolve")
    if not allow_private:
        for candidate in addresses:
            reason = address_refusal(candidate)
            if reason:
                raise CallbackTargetRefused(reason.replace("the host is", "the host resolves to"))
    return addresses[0]
