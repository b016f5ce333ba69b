"""A python-zeroconf browser on loopback: sees what our advertiser announces without a LAN."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from wyoming_minerva.discovery import SERVICE_TYPE


def unique_name(prefix: str = "minerva-test") -> str:
    """A per-test instance name, so cached records of another run never answer for this one."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Browser:
    zeroconf: AsyncZeroconf
    added: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Added:
            self.added.add(name)
            self.removed.discard(name)
        elif state_change is ServiceStateChange.Removed:
            self.removed.add(name)
        self._changed.set()

    async def wait_for(self, names: set[str], *, gone: bool = False, timeout: float = 10.0) -> None:
        """Until every name is added (or, with gone, removed); TimeoutError otherwise."""
        seen = self.removed if gone else self.added
        async with asyncio.timeout(timeout):
            while not names <= seen:
                self._changed.clear()
                await self._changed.wait()

    async def resolve(self, name: str, timeout: float = 3.0) -> tuple[int, list[str]]:
        """Port and addresses of one instance, asked on the wire."""
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        assert await info.async_request(self.zeroconf.zeroconf, int(timeout * 1000)), f"{name} did not answer"
        assert info.port is not None
        return info.port, [str(ipaddress.ip_address(a)) for a in info.addresses]


@asynccontextmanager
async def loopback_browser() -> AsyncIterator[Browser]:
    zeroconf = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    browser = Browser(zeroconf)
    service_browser = AsyncServiceBrowser(zeroconf.zeroconf, [SERVICE_TYPE], handlers=[browser.on_change])
    try:
        yield browser
    finally:
        await service_browser.async_cancel()
        await zeroconf.async_close()
