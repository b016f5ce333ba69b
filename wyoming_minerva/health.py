"""Health check: `python -m wyoming_minerva.health [URI --expect asr|tts|wake] [--timeout S]`.

Sends `describe` and exits 0 only if the expected program answers `info` within the timeout; 1 when a
service is unhealthy, 2 for bad usage. Without a URI it checks every service the server would run
with the same MINERVA_* environment (0.0.0.0 / :: become loopback), which is what the Docker
HEALTHCHECK uses: switching a service off by environment does not make the container unhealthy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from wyoming.event import async_read_event, async_write_event
from wyoming.info import Artifact, Describe, Info

from .errors import MinervaError
from .settings import ListenUri, Service, Settings

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2
DEFAULT_TIMEOUT = 5.0


class Unhealthy(Exception):
    """The service did not give the expected answer (the message says why, in one line)."""


@dataclass(frozen=True)
class Target:
    uri: ListenUri
    expect: Service


def programs_of(info: Info, kind: Service) -> list[str]:
    """Names of the installed programs of one kind in an `info` answer."""
    programs: Sequence[Artifact]
    if kind is Service.ASR:
        programs = info.asr or ()
    elif kind is Service.TTS:
        programs = info.tts or ()
    else:
        programs = info.wake or ()
    return [program.name for program in programs if program.installed]


async def _connect(uri: ListenUri) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if uri.scheme == "tcp":
        return await asyncio.open_connection(uri.host, uri.port)
    if uri.scheme == "unix":
        return await asyncio.open_unix_connection(uri.path)
    raise Unhealthy(f"cannot check {uri}: only tcp:// and unix:// services can be reached")


async def _describe(uri: ListenUri) -> Info:
    reader, writer = await _connect(uri)
    try:
        await async_write_event(Describe().event(), writer)
        while True:
            event = await async_read_event(reader)
            if event is None:
                raise Unhealthy("closed the connection without answering describe")
            if Info.is_type(event.type):
                return Info.from_event(event)
            if event.type == "error":
                raise Unhealthy(f"answered with an error: {(event.data or {}).get('text', '')}")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def check(target: Target, timeout: float) -> list[str]:
    """The installed programs of the expected kind; Unhealthy with a reason otherwise."""
    try:
        async with asyncio.timeout(timeout):
            info = await _describe(target.uri)
    except TimeoutError as err:
        raise Unhealthy(f"no answer to describe within {timeout:g} s") from err
    except OSError as err:
        raise Unhealthy(f"cannot talk to it: {os.strerror(err.errno) if err.errno else err}") from err
    except asyncio.IncompleteReadError as err:
        raise Unhealthy("closed the connection in the middle of its answer") from err
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise Unhealthy(f"sent an answer that is not a Wyoming info event: {err}") from err
    names = programs_of(info, target.expect)
    if not names:
        raise Unhealthy(f"answered, but offers no installed {target.expect.value} program")
    return names


def targets_from_settings(settings: Settings) -> list[Target]:
    """The services this configuration runs, addressed from the same machine."""
    targets = []
    for service, uri in settings.services.items():
        if uri.scheme == "tcp" and uri.host in ("0.0.0.0", "::", ""):
            uri = ListenUri("tcp", "::1" if uri.host == "::" else "127.0.0.1", uri.port)
        if uri.scheme in ("tcp", "unix"):
            targets.append(Target(uri, service))
    return targets


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wyoming_minerva.health",
        description="Send describe to a Wyoming service; exit 0 only if the expected program answers in time. "
        "Without URI: check every service configured by the MINERVA_* environment.",
    )
    p.add_argument("uri", nargs="?", help="tcp://HOST:PORT or unix://PATH")
    p.add_argument(
        "--expect", choices=[s.value for s in Service], help="program kind that must answer (needed with URI)"
    )
    p.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help=f"seconds for each check (default {DEFAULT_TIMEOUT:g})"
    )
    return p


def _targets(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Target]:
    if args.uri is None:
        if args.expect:
            parser.error("--expect needs a URI")
        from .cli import parse_settings  # only here: reads MINERVA_* like the server does

        return targets_from_settings(parse_settings([]))
    if not args.expect:
        parser.error("a URI needs --expect asr|tts|wake")
    return [Target(ListenUri.parse(args.uri), Service(args.expect))]


async def run_checks(targets: Sequence[Target], timeout: float) -> int:
    results = await asyncio.gather(*(check(t, timeout) for t in targets), return_exceptions=True)
    status = EXIT_HEALTHY
    for target, result in zip(targets, results, strict=True):
        if isinstance(result, Unhealthy):
            print(f"unhealthy: {target.expect.value} at {target.uri}: {result}", file=sys.stderr)
            status = EXIT_UNHEALTHY
        elif isinstance(result, BaseException):
            raise result
        else:
            print(f"ok: {target.expect.value} at {target.uri}: {', '.join(result)}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    try:
        targets = _targets(args, parser)
    except MinervaError as err:
        print(f"health: {err}", file=sys.stderr)
        return EXIT_USAGE
    if not targets:
        print("health: no tcp:// or unix:// service to check", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(run_checks(targets, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
