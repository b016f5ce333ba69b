"""Zeroconf (mDNS) advertisement of the Wyoming services, so Home Assistant discovers them.

One `AsyncZeroconf` for the whole process, used as an async context manager: every TCP service is
registered as `_wyoming._tcp.local.` under a stable instance name (`<NAME>-asr`, `-tts`, `-wake`)
and unregistered with goodbye packets on exit. Home Assistant drops records that carry the
unspecified address, so a service bound to 0.0.0.0 / :: is advertised with the machine's real
addresses instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

import ifaddr
from zeroconf import (
    BadTypeInNameException,
    InterfaceChoice,
    IPVersion,
    NonUniqueNameException,
)
from zeroconf import Error as ZeroconfError
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from .settings import DiscoverySettings, Service

_LOGGER = logging.getLogger(__name__)

SERVICE_TYPE = "_wyoming._tcp.local."
MAX_LABEL_BYTES = 63  # one DNS label

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ZeroconfFactory = Callable[..., AsyncZeroconf]  # AsyncZeroconf(interfaces=..., ip_version=...)


@dataclass(frozen=True)
class Endpoint:
    """One listening TCP service: the address it is bound to and its real port."""

    service: Service
    host: str
    port: int


@dataclass(frozen=True)
class Advertisement:
    """What is (or would be) announced for one service."""

    service: Service
    instance: str  # full name, e.g. "kitchen-asr._wyoming._tcp.local."
    port: int
    addresses: tuple[IPAddress, ...]


def default_name() -> str:
    """The host name without its domain: stable across restarts, readable in Home Assistant."""
    return socket.gethostname().split(".")[0] or "wyoming-minerva"


def instance_name(name: str, service: Service) -> str:
    suffix = f"-{service.value}"
    label = name.encode()[: MAX_LABEL_BYTES - len(suffix)].decode(errors="ignore") + suffix
    return f"{label}.{SERVICE_TYPE}"


def server_name(name: str) -> str:
    """Our own mDNS host name, so our A/AAAA records never contradict the OS responder's."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "wyoming"
    return f"{label[: MAX_LABEL_BYTES - len('-minerva')]}-minerva.local."


def local_addresses() -> list[IPAddress]:
    """Every address on this machine's interfaces (loopback included; callers filter)."""
    found: list[IPAddress] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            raw = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            with contextlib.suppress(ValueError):
                found.append(ipaddress.ip_address(raw))
    return found


def _reachable(address: IPAddress) -> bool:
    # Loopback is useless to another machine; Home Assistant skips link-local addresses.
    return not (address.is_loopback or address.is_link_local or address.is_unspecified)


def advertised_addresses(
    bound: Sequence[IPAddress], override: Sequence[IPAddress], local: Iterable[IPAddress]
) -> tuple[IPAddress, ...]:
    """The addresses to announce for a service bound to `bound` (pure: the caller resolves names).

    `--zeroconf-host` wins; an unspecified bind (0.0.0.0 or ::, one family each since asyncio sets
    IPV6_V6ONLY) becomes the machine's reachable addresses of that family; otherwise the bound address.
    """
    if override:
        return tuple(dict.fromkeys(override))
    chosen: list[IPAddress] = []
    local = list(local)
    for address in bound:
        if address.is_unspecified:
            chosen += [a for a in local if a.version == address.version and _reachable(a)]
        else:
            chosen.append(address)
    return tuple(dict.fromkeys(chosen))


async def resolve(host: str) -> list[IPAddress]:
    """An address literal as is; a host name through the resolver (off the event loop)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def _ip_version(addresses: Iterable[IPAddress]) -> IPVersion:
    versions = {a.version for a in addresses}
    if versions == {6}:
        return IPVersion.V6Only
    return IPVersion.All if versions == {4, 6} else IPVersion.V4Only


class Advertiser:
    """Async context manager: registers the endpoints on enter, sends goodbyes and closes on exit.

    A failure to advertise (no multicast route, a name clash we cannot resolve) is logged and the
    services keep running: discovery is a convenience, the ports work without it.
    """

    def __init__(
        self,
        settings: DiscoverySettings,
        endpoints: Sequence[Endpoint],
        *,
        local: Sequence[IPAddress] | None = None,
        zeroconf_factory: ZeroconfFactory = AsyncZeroconf,
    ) -> None:
        self.settings = settings
        self._zeroconf_factory = zeroconf_factory
        self.endpoints = tuple(endpoints)
        self.name = settings.name or default_name()
        self._local = local
        self._zeroconf: AsyncZeroconf | None = None
        self._infos: list[AsyncServiceInfo] = []
        self.advertised: list[Advertisement] = []

    async def plan(self) -> list[Advertisement]:
        """What would be announced, without touching the network."""
        override = await resolve(self.settings.host) if self.settings.host else []
        local = list(self._local) if self._local is not None else local_addresses()
        plans = []
        for endpoint in self.endpoints:
            addresses = advertised_addresses(await resolve(endpoint.host), override, local)
            if not addresses:
                _LOGGER.warning(
                    "Not advertising %s: no network address besides loopback (use --zeroconf-host)",
                    endpoint.service.value,
                )
                continue
            plans.append(
                Advertisement(endpoint.service, instance_name(self.name, endpoint.service), endpoint.port, addresses)
            )
        return plans

    async def __aenter__(self) -> Advertiser:
        try:
            plans = await self.plan()
            if plans:
                await self._register(plans)
        except (OSError, ZeroconfError) as err:
            _LOGGER.warning("Zeroconf discovery is off: %s", err)
            await self._close()
        except BaseException:  # cancelled while probing: leave no socket behind
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _register(self, plans: Sequence[Advertisement]) -> None:
        addresses = [a for plan in plans for a in plan.addresses]
        # Announcing loopback on the LAN helps nobody; announcing it on loopback serves local clients
        # (and lets the tests run on a machine without a network).
        interfaces: InterfaceChoice | list[str] = InterfaceChoice.All
        if all(a.is_loopback for a in addresses):
            interfaces = list(dict.fromkeys(str(a) for a in addresses))
        self._zeroconf = self._zeroconf_factory(interfaces=interfaces, ip_version=_ip_version(addresses))
        server = server_name(self.name)
        infos = [
            AsyncServiceInfo(
                SERVICE_TYPE,
                plan.instance,
                port=plan.port,
                addresses=[a.packed for a in plan.addresses],
                server=server,
                properties={"service": plan.service.value},
            )
            for plan in plans
        ]
        # Probing takes ~1.5 s per name: run them side by side.
        results = await asyncio.gather(*(self._register_one(info) for info in infos), return_exceptions=True)
        for plan, info, result in zip(plans, infos, results, strict=True):
            if isinstance(result, BaseException):
                _LOGGER.warning("Could not advertise %s as %s: %s", plan.service.value, plan.instance, result)
                continue
            self._infos.append(info)
            self.advertised.append(Advertisement(plan.service, info.name, plan.port, plan.addresses))
            _LOGGER.info(
                "Advertising %s as %s on %s port %d",
                plan.service.value,
                info.name,
                ", ".join(str(a) for a in plan.addresses),
                plan.port,
            )

    async def _register_one(self, info: AsyncServiceInfo) -> None:
        assert self._zeroconf is not None
        try:
            announced = await self._zeroconf.async_register_service(info)
        except NonUniqueNameException:
            # Someone else answers for our stable name: take "<name>-2" rather than not being found.
            _LOGGER.warning("%s is taken on this network; letting zeroconf pick another name", info.name)
            announced = await self._zeroconf.async_register_service(info, allow_name_change=True)
        except BadTypeInNameException as err:
            raise ZeroconfError(f"{info.name!r} is not a valid service name: {err}") from err
        await announced

    async def _close(self) -> None:
        zeroconf, self._zeroconf = self._zeroconf, None
        if zeroconf is None:
            return
        try:
            if self._infos:
                await zeroconf.async_unregister_all_services()  # goodbye packets (TTL 0)
                _LOGGER.info("Zeroconf: withdrew %s", ", ".join(info.name for info in self._infos))
            await zeroconf.async_close()
        except (OSError, ZeroconfError) as err:
            _LOGGER.warning("Error while closing zeroconf: %s", err)
        self._infos.clear()
        self.advertised.clear()
