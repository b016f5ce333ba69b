"""Zeroconf: which addresses and names are announced, and a real browser on loopback sees them come and go."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from ipaddress import ip_address
from typing import Any

import pytest
from conftest import wyoming_server
from wyoming.info import Info
from zeroconf import DNSIncoming, DNSOutgoing, DNSPointer, IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
from zeroconf.const import _CLASS_IN, _FLAGS_AA, _FLAGS_QR_RESPONSE, _TYPE_PTR
from zeroconf_helpers import loopback_browser, unique_name

from wyoming_minerva.app import App
from wyoming_minerva.cli import parse_settings
from wyoming_minerva.discovery import (
    SERVICE_TYPE,
    Advertiser,
    Endpoint,
    IPAddress,
    advertised_addresses,
    instance_name,
    server_name,
)
from wyoming_minerva.handlers.info import DescribingHandler
from wyoming_minerva.handlers.server import EventSink
from wyoming_minerva.settings import DiscoverySettings, ListenUri, Service, Settings

pytestmark = pytest.mark.timeout(60)

LOCAL: list[IPAddress] = [
    ip_address("127.0.0.1"),
    ip_address("192.168.1.20"),
    ip_address("169.254.7.7"),
    ip_address("10.0.0.5"),
    ip_address("::1"),
    ip_address("fe80::1"),
    ip_address("2001:db8::20"),
]


def ips(*texts: str) -> list[IPAddress]:
    return [ip_address(t) for t in texts]


def test_unspecified_ipv4_bind_announces_the_real_ipv4_addresses() -> None:
    got = advertised_addresses(ips("0.0.0.0"), [], LOCAL)
    assert list(got) == ips("192.168.1.20", "10.0.0.5")  # no loopback, no link-local, never 0.0.0.0


def test_unspecified_ipv6_bind_announces_the_real_ipv6_addresses() -> None:
    got = advertised_addresses(ips("::"), [], LOCAL)
    assert list(got) == ips("2001:db8::20")


def test_specific_bind_announces_that_address_and_override_wins() -> None:
    assert list(advertised_addresses(ips("10.0.0.5"), [], LOCAL)) == ips("10.0.0.5")
    assert list(advertised_addresses(ips("127.0.0.1"), [], LOCAL)) == ips("127.0.0.1")
    override = ips("192.168.1.99")
    assert list(advertised_addresses(ips("0.0.0.0"), override, LOCAL)) == override


def test_no_reachable_address_means_nothing_rather_than_the_unspecified_one() -> None:
    assert advertised_addresses(ips("0.0.0.0"), [], ips("127.0.0.1", "::1")) == ()


def test_names_are_stable_per_service_and_fit_a_dns_label() -> None:
    assert instance_name("kitchen", Service.ASR) == f"kitchen-asr.{SERVICE_TYPE}"
    assert instance_name("kitchen", Service.WAKE) == f"kitchen-wake.{SERVICE_TYPE}"
    long = instance_name("x" * 100, Service.TTS)
    assert (
        len(long.split(".")[0].encode()) == 63
        and long.startswith("x")
        and ".".join(long.split(".")[1:]) == "_wyoming._tcp.local."
    )
    assert server_name("Living Room Pi") == "living-room-pi-minerva.local."


async def test_plan_for_an_all_interfaces_bind_never_contains_the_unspecified_address() -> None:
    settings = DiscoverySettings(name="box")
    endpoints = [Endpoint(Service.ASR, "0.0.0.0", 10300), Endpoint(Service.TTS, "::", 10200)]
    plans = await Advertiser(settings, endpoints, local=LOCAL).plan()
    assert [(p.instance, p.port, [str(a) for a in p.addresses]) for p in plans] == [
        (f"box-asr.{SERVICE_TYPE}", 10300, ["192.168.1.20", "10.0.0.5"]),
        (f"box-tts.{SERVICE_TYPE}", 10200, ["2001:db8::20"]),
    ]
    with_host = await Advertiser(DiscoverySettings(name="box", host="10.9.8.7"), endpoints, local=LOCAL).plan()
    assert {str(a) for p in with_host for a in p.addresses} == {"10.9.8.7"}


async def test_without_a_network_address_nothing_is_announced_and_nothing_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoints = [Endpoint(Service.ASR, "0.0.0.0", 10300)]
    caplog.set_level(logging.WARNING)
    async with Advertiser(DiscoverySettings(name="box"), endpoints, local=ips("127.0.0.1")) as advertiser:
        assert advertiser.advertised == []
    assert "--zeroconf-host" in caplog.text


def _info_factory(sink: EventSink) -> DescribingHandler:
    return DescribingHandler(sink, Info)


async def test_browser_sees_every_service_with_its_port_and_address_then_sees_it_leave() -> None:
    name = unique_name()
    async with (
        wyoming_server("asr", _info_factory) as asr,
        wyoming_server("tts", _info_factory) as tts,
        wyoming_server("wake", _info_factory) as wake,
        loopback_browser() as browser,
    ):
        ports = {Service.ASR: asr.port, Service.TTS: tts.port, Service.WAKE: wake.port}
        endpoints = [Endpoint(service, "127.0.0.1", port) for service, port in ports.items()]
        expected = {instance_name(name, service): port for service, port in ports.items()}
        async with Advertiser(DiscoverySettings(name=name), endpoints) as advertiser:
            assert {a.instance for a in advertiser.advertised} == set(expected)
            await browser.wait_for(set(expected))
            for instance, port in expected.items():
                assert await browser.resolve(instance) == (port, ["127.0.0.1"])
        await browser.wait_for(set(expected), gone=True, timeout=5)


async def test_app_advertises_the_real_port_of_a_port_0_server_and_withdraws_on_stop() -> None:
    name = unique_name()
    settings = Settings(asr_uri=ListenUri("tcp", "127.0.0.1", 0), discovery=DiscoverySettings(name=name))
    async with loopback_browser() as browser:
        app = App(settings)
        await app.start()
        try:
            assert app.advertising is not None
            assert [a.port for a in (await app.advertising).advertised] == [app.port(Service.ASR)]
            port = app.port(Service.ASR)
            assert port != 0
            await browser.wait_for({instance_name(name, Service.ASR)})
            assert await browser.resolve(instance_name(name, Service.ASR)) == (port, ["127.0.0.1"])
        finally:
            await app.stop()
        assert app.advertising is None
        await browser.wait_for({instance_name(name, Service.ASR)}, gone=True, timeout=5)


async def test_no_zeroconf_announces_nothing() -> None:
    name = unique_name()
    settings = Settings(asr_uri=ListenUri("tcp", "127.0.0.1", 0), discovery=DiscoverySettings(enabled=False, name=name))
    async with loopback_browser() as browser:
        app = App(settings)
        await app.start()
        try:
            assert app.advertising is None
            with pytest.raises(TimeoutError):
                await browser.wait_for({instance_name(name, Service.ASR)}, timeout=2.5)
        finally:
            await app.stop()


async def test_stopping_while_zeroconf_still_probes_cancels_it_cleanly() -> None:
    name = unique_name()
    settings = Settings(asr_uri=ListenUri("tcp", "127.0.0.1", 0), discovery=DiscoverySettings(name=name))
    async with loopback_browser() as browser:
        app = App(settings)
        await app.start()
        task = app.advertising
        assert task is not None and not task.done()  # probing takes ~1.5 s
        await app.stop()
        assert task.cancelled()
        with pytest.raises(TimeoutError):
            await browser.wait_for({instance_name(name, Service.ASR)}, timeout=2.5)


def test_discovery_flags_and_environment() -> None:
    assert parse_settings([], env={}).discovery == DiscoverySettings(enabled=True, name=None, host=None)
    assert parse_settings(["--zeroconf"], env={}).discovery.name is None  # NAME defaults to the host name
    given = parse_settings(["--zeroconf", "kitchen", "--zeroconf-host", "10.0.0.2"], env={}).discovery
    assert given == DiscoverySettings(enabled=True, name="kitchen", host="10.0.0.2")
    assert not parse_settings(["--no-zeroconf"], env={}).discovery.enabled
    assert not parse_settings([], env={"MINERVA_NO_ZEROCONF": "1"}).discovery.enabled
    assert not parse_settings([], env={"MINERVA_ZEROCONF": "off"}).discovery.enabled
    assert parse_settings([], env={"MINERVA_ZEROCONF": "kitchen"}).discovery.name == "kitchen"
    assert parse_settings([], env={"MINERVA_ZEROCONF_HOST": "10.0.0.3"}).discovery.host == "10.0.0.3"


def answered_for(instance: str) -> Callable[..., AsyncZeroconf]:
    """A real AsyncZeroconf that has already received another responder's answer for `instance`.

    The answer goes in through zeroconf's own handling of a received response (the path a packet from the
    network takes), so the name is taken for it exactly as on a LAN where another host answers for it.
    """

    def make(**kwargs: Any) -> AsyncZeroconf:
        zeroconf = AsyncZeroconf(**kwargs)
        answer = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
        answer.add_answer_at_time(DNSPointer(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN, 4500, instance), 0)
        for packet in answer.packets():
            zeroconf.zeroconf.record_manager.async_updates_from_response(DNSIncoming(packet))
        return zeroconf

    return make


async def test_a_name_already_answered_for_gets_a_numbered_name_instead_of_failing() -> None:
    name = unique_name()
    endpoint = [Endpoint(Service.ASR, "127.0.0.1", 10300)]
    taken = answered_for(instance_name(name, Service.ASR))
    async with Advertiser(DiscoverySettings(name=name), endpoint, zeroconf_factory=taken) as advertiser:
        assert [a.instance for a in advertiser.advertised] == [f"{name}-asr-2.{SERVICE_TYPE}"]


async def loopback_carries_a_defence(instance: str) -> bool:
    """Whether a responder probing on loopback hears the answer of another one already registered (not on
    every host: the answer to a probe goes back by unicast to port 5353, which both share)."""
    zeroconf = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        await zeroconf.zeroconf.async_wait_for_start()
        probe = AsyncServiceInfo(SERVICE_TYPE, instance, port=1, addresses=[ip_address("127.0.0.1").packed])
        zeroconf.zeroconf.async_send(zeroconf.zeroconf.generate_service_query(probe))
        for _ in range(30):
            if zeroconf.zeroconf.cache.current_entry_with_name_and_alias(SERVICE_TYPE, instance):
                return True
            await asyncio.sleep(0.1)
        return False
    finally:
        await zeroconf.async_close()


async def test_two_advertisers_on_loopback_with_one_name_end_with_two_names() -> None:
    name = unique_name()
    endpoint = [Endpoint(Service.ASR, "127.0.0.1", 10300)]
    async with Advertiser(DiscoverySettings(name=name), endpoint) as first:
        assert [a.instance for a in first.advertised] == [instance_name(name, Service.ASR)]
        if not await loopback_carries_a_defence(instance_name(name, Service.ASR)):
            pytest.skip("this host's loopback does not carry one mDNS responder's answer to another's probe")
        async with Advertiser(DiscoverySettings(name=name), endpoint) as second:
            assert [a.instance for a in second.advertised] == [f"{name}-asr-2.{SERVICE_TYPE}"]
