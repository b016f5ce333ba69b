#!/usr/bin/env python3
"""Home Assistant add-on glue for wyoming-minerva (run by the s6 services in this image).

  minerva_addon.py command     print the wyoming-minerva command built from the add-on options
  minerva_addon.py run         exec that command (the s6 service "minerva" does this)
  minerva_addon.py discovery   once the ASR port answers describe, announce it to the Supervisor

The option -> flag mapping lives here, in plain Python, so it can be tested with a fake options file
on a machine without Supervisor, bashio or Docker (tests/test_addon.py does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger("minerva-addon")

OPTIONS_FILE = Path(os.environ.get("MINERVA_ADDON_OPTIONS", "/data/options.json"))
SHARE = Path(os.environ.get("MINERVA_ADDON_SHARE", "/share"))
SUPERVISOR_URL = os.environ.get("MINERVA_SUPERVISOR_URL", "http://supervisor")
ASR_PORT = 10300


class AddonError(Exception):
    """Options that cannot work; the message is shown in the add-on log."""


def _int(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise AddonError(f"expected a whole number, got {value!r}")
    return str(int(value))


def _float(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AddonError(f"expected a number, got {value!r}")
    return repr(float(value))


def build_flags(options: Mapping[str, Any], share: Path = SHARE) -> list[str]:
    """wyoming-minerva arguments for these add-on options (every service on its standard port)."""
    flags = [
        # Supervisor discovery announces the add-on; mDNS from the add-on network would only
        # announce a container address that other machines cannot reach.
        "--no-zeroconf",
        "--data-dir",
        "/data",  # the first data dir receives downloads, and /data is the add-on's own volume
    ]
    # Models people already keep for the official add-ons.
    for folder in ("piper", "whisper"):
        if (share / folder).is_dir():
            flags += ["--data-dir", str(share / folder)]
    if (share / "openwakeword").is_dir():
        flags += ["--custom-model-dir", str(share / "openwakeword")]

    model = str(options.get("stt_model") or "tiny.en+base")
    if model == "custom":
        model = str(options.get("custom_stt_model") or "").strip()
        if not model:
            raise AddonError("stt_model is 'custom' but custom_stt_model is empty")
    for program in model.split("+"):  # "tiny.en+base": fast English plus the multilingual model, both bundled
        flags += ["--stt-model", program]
    flags += ["--stt-language", str(options.get("stt_language") or "auto")]
    flags += ["--stt-beam-size", _int(options.get("stt_beam_size", 1))]
    if prompt := str(options.get("stt_initial_prompt") or "").strip():
        flags += ["--stt-initial-prompt", prompt]

    flags += ["--voice", str(options.get("voice") or "en_US-joe-medium")]
    if (speaker := options.get("speaker")) not in (None, ""):
        flags += ["--speaker", str(speaker)]
    if options.get("length_scale") is not None:
        flags += ["--length-scale", _float(options["length_scale"])]

    for name in options.get("wake_models") or ():
        flags += ["--wake-model", str(name)]
    flags += ["--default-wake-model", str(options.get("default_wake_model") or "okay_nabu")]
    flags += ["--wake-threshold", _float(options.get("wake_threshold", 0.5))]
    flags += ["--wake-trigger-level", _int(options.get("wake_trigger_level", 1))]

    if options.get("preload"):
        flags.append("--preload")
    if options.get("debug_logging"):
        flags.append("--debug")
    return flags


def read_options(path: Path = OPTIONS_FILE) -> dict[str, Any]:
    try:
        options = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AddonError(f"{path} is missing: is this running as a Home Assistant add-on?") from None
    except json.JSONDecodeError as err:
        raise AddonError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(options, dict):
        raise AddonError(f"{path} must hold a JSON object")
    return options


def command() -> list[str]:
    return ["wyoming-minerva", *build_flags(read_options())]


def run() -> None:
    argv = command()
    _LOGGER.info("Starting %s", shlex.join(argv))
    os.execvp(argv[0], argv)  # replaces this process: s6 supervises wyoming-minerva itself


def wait_for_asr(port: int, deadline: float) -> bool:
    """Poll with the project's own health check until the ASR program answers describe."""
    from wyoming_minerva.health import Target, Unhealthy, check
    from wyoming_minerva.settings import ListenUri, Service

    target = Target(ListenUri("tcp", "127.0.0.1", port), Service.ASR)
    while True:
        try:
            asyncio.run(check(target, timeout=2.0))
            return True
        except Unhealthy as err:
            if time.monotonic() >= deadline:
                _LOGGER.error("The speech-to-text service never answered describe: %s", err)
                return False
            time.sleep(0.5)


def announce(uri: str, supervisor: str = SUPERVISOR_URL) -> str:
    """POST /discovery like bashio::discovery; returns the message uuid."""
    token = os.environ.get("SUPERVISOR_TOKEN") or os.environ.get("HASSIO_TOKEN") or ""
    body = json.dumps({"service": "wyoming", "config": {"uri": uri}}).encode()
    request = urllib.request.Request(
        f"{supervisor.rstrip('/')}/discovery",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        raise AddonError(f"the Supervisor refused the discovery message: HTTP {err.code}") from err
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as err:
        raise AddonError(f"cannot reach the Supervisor: {err}") from err
    if answer.get("result") != "ok":
        raise AddonError(f"the Supervisor answered {answer.get('result')!r}: {answer.get('message', '')}")
    return str((answer.get("data") or {}).get("uuid", ""))


def discovery(port: int, wait_seconds: float) -> int:
    """Always exits 0: a failed announcement must not take the running services down."""
    if not wait_for_asr(port, time.monotonic() + wait_seconds):
        return 0
    # The Supervisor keeps one message per add-on and service, so one URI: the ASR service.
    uri = f"tcp://{socket.gethostname()}:{port}"
    try:
        uuid = announce(uri)
    except AddonError as err:
        _LOGGER.error("Discovery message to Home Assistant failed: %s", err)
        return 0
    _LOGGER.info("Sent discovery information to Home Assistant: %s (message %s)", uri, uuid)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[minerva-addon] %(levelname)s: %(message)s")
    parser = argparse.ArgumentParser(prog="minerva_addon.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("command", help="print the command built from the options (shell-quoted)")
    sub.add_parser("run", help="exec wyoming-minerva with the options as flags")
    found = sub.add_parser("discovery", help="announce the ASR service to the Supervisor once it answers")
    found.add_argument("--port", type=int, default=ASR_PORT, help=f"ASR port (default {ASR_PORT})")
    found.add_argument("--wait", type=float, default=600.0, help="seconds to wait for the ASR service (default 600)")
    args = parser.parse_args(argv)
    try:
        if args.command == "command":
            print(shlex.join(command()))
            return 0
        if args.command == "run":
            run()
        return discovery(args.port, args.wait)
    except AddonError as err:
        _LOGGER.error("%s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
