"""docker/: the add-on config agrees with the CLI, the run script's option→flag mapping, Supervisor discovery.

No Docker engine or Supervisor here: the config files are parsed and checked against the real CLI, the mapping
script runs with fake options files, and the discovery step talks to a fake Supervisor on loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from wyoming_minerva import __version__
from wyoming_minerva.app import App
from wyoming_minerva.cli import parse_settings
from wyoming_minerva.settings import DiscoverySettings, ListenUri, Settings
from wyoming_minerva.stt.whisper import repo_id_for

pytestmark = pytest.mark.timeout(90)

DOCKER = Path(__file__).resolve().parents[1] / "docker"
ADDON = DOCKER / "addon"
SCRIPT = ADDON / "rootfs/usr/lib/minerva/minerva_addon.py"
S6 = ADDON / "rootfs/etc/s6-overlay/s6-rc.d"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return dict(load_yaml(ADDON / "config.yaml"))


def cli_ports(settings: Settings) -> set[str]:
    ports = {uri.port for uri in settings.services.values()}
    if settings.http is not None:
        ports.add(settings.http.port)
    return {f"{port}/tcp" for port in ports}


def schema_choices(config: dict[str, Any], key: str) -> list[str]:
    match = re.fullmatch(r"list\((.*)\)", config["schema"][key].strip())
    assert match, config["schema"][key]
    return match.group(1).split("|")


def addon_command(
    options: dict[str, Any], tmp_path: Path, share: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The command the add-on's run script would exec, for these options."""
    options_file = tmp_path / "options.json"
    options_file.write_text(json.dumps(options), encoding="utf-8")
    env = {
        **os.environ,
        "MINERVA_ADDON_OPTIONS": str(options_file),
        "MINERVA_ADDON_SHARE": str(share or tmp_path / "no-share"),
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT), "command"], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def settings_from(result: subprocess.CompletedProcess[str]) -> Settings:
    assert result.returncode == 0, result.stderr
    argv = shlex.split(result.stdout)
    assert argv[0] == "wyoming-minerva"
    return parse_settings(argv[1:], env={})  # the real CLI must accept every flag


# --- config.yaml and friends -------------------------------------------------------------------


def test_config_has_what_the_supervisor_needs(config: dict[str, Any]) -> None:
    for key in ("name", "version", "slug", "description", "arch", "options", "schema", "ports"):
        assert config.get(key), key
    assert config["init"] is False  # s6-overlay of the base image is PID 1
    assert config["discovery"] == ["wyoming"]
    assert set(config["arch"]) <= {"amd64", "aarch64", "armv7", "armhf", "i386"}
    assert re.fullmatch(r"[a-z0-9_]+", config["slug"])
    assert set(config["options"]) <= set(config["schema"])


def test_versions_agree(config: dict[str, Any]) -> None:
    build = load_yaml(ADDON / "build.yaml")
    assert config["version"] == __version__ == build["args"]["MINERVA_VERSION"]
    assert set(build["build_from"]) == set(config["arch"])


def test_ports_are_the_cli_defaults(config: dict[str, Any]) -> None:
    assert set(config["ports"]) == cli_ports(parse_settings([], env={}))


def test_every_option_and_port_is_translated(config: dict[str, Any]) -> None:
    translations = load_yaml(ADDON / "translations/en.yaml")
    assert set(translations["configuration"]) == set(config["schema"])
    assert set(translations["network"]) == set(config["ports"])


def test_default_options_give_the_cli_defaults(config: dict[str, Any], tmp_path: Path) -> None:
    from_addon = settings_from(addon_command(config["options"], tmp_path))
    defaults = parse_settings([], env={})
    # On purpose different: models live in /data, and Supervisor discovery replaces zeroconf.
    assert from_addon.data_dirs == (Path("/data"),)
    assert from_addon.discovery == DiscoverySettings(enabled=False)
    assert dataclasses.replace(from_addon, data_dirs=defaults.data_dirs, discovery=defaults.discovery) == defaults


def test_model_and_language_choices_are_ones_the_engine_knows(config: dict[str, Any]) -> None:
    for choice in schema_choices(config, "stt_model"):
        for model in choice.split("+") if choice != "custom" else ():
            assert repo_id_for(model)  # raises ModelNotFoundError for an unknown name
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert schema_choices(config, "stt_language") == ["auto", *_LANGUAGE_CODES]
    assert config["options"]["stt_model"] in schema_choices(config, "stt_model")


# --- the run script's option→flag mapping -------------------------------------------------------


def test_every_option_reaches_its_flag(tmp_path: Path) -> None:
    share = tmp_path / "share"
    for folder in ("piper", "openwakeword"):
        (share / folder).mkdir(parents=True)
    options = {
        "stt_model": "custom",
        "custom_stt_model": "Systran/faster-distil-whisper-small.en",
        "stt_language": "de",
        "stt_beam_size": 5,
        "stt_initial_prompt": "Kitchen, O'Brien's room",
        "voice": "de_DE-thorsten-medium",
        "speaker": "2",
        "length_scale": 1.2,
        "wake_models": ["okay_nabu", "hey_jarvis"],
        "default_wake_model": "hey_jarvis",
        "wake_threshold": 0.65,
        "wake_trigger_level": 2,
        "preload": True,
        "debug_logging": True,
    }
    s = settings_from(addon_command(options, tmp_path, share))
    assert s.services and {u.port for u in s.services.values()} == {10300, 10200, 10400}
    assert all(u.host == "0.0.0.0" for u in s.services.values())
    assert s.data_dirs == (Path("/data"), share / "piper")
    assert s.wake.custom_model_dirs == (share / "openwakeword",)
    assert (s.asr.models, s.asr.language, s.asr.beam_size) == (("Systran/faster-distil-whisper-small.en",), "de", 5)
    assert s.asr.initial_prompt == "Kitchen, O'Brien's room"
    assert (s.tts.voice, s.tts.speaker, s.tts.length_scale) == ("de_DE-thorsten-medium", "2", 1.2)
    assert s.wake.models == ("okay_nabu", "hey_jarvis")
    assert (s.wake.default_model, s.wake.threshold, s.wake.trigger_level) == ("hey_jarvis", 0.65, 2)
    assert s.preload and s.debug
    assert not s.discovery.enabled


def test_custom_model_without_a_name_is_a_clear_error(tmp_path: Path) -> None:
    result = addon_command({"stt_model": "custom"}, tmp_path)
    assert result.returncode == 1
    assert "custom_stt_model is empty" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_options_file_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "MINERVA_ADDON_OPTIONS": str(tmp_path / "nope.json")}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "command"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1 and "nope.json is missing" in result.stderr


def test_s6_services_run_the_mapping_and_discovery_after_the_server() -> None:
    assert (S6 / "minerva/type").read_text().strip() == "longrun"
    assert (S6 / "discovery/type").read_text().strip() == "oneshot"
    assert (S6 / "discovery/up").read_text().strip() == str(
        Path("/") / (S6 / "discovery/run").relative_to(ADDON / "rootfs")
    )
    assert (S6 / "discovery/dependencies.d/minerva").exists()
    assert {p.name for p in (S6 / "user/contents.d").iterdir()} == {"minerva", "discovery"}
    installed = "/" + str(SCRIPT.relative_to(ADDON / "rootfs"))
    for service, command in (("minerva", "run"), ("discovery", "discovery")):
        run = S6 / service / "run"
        assert os.access(run, os.X_OK), run
        assert f"exec python3 {installed} {command}" in run.read_text()
    assert os.access(S6 / "minerva/finish", os.X_OK)


# --- Supervisor discovery ----------------------------------------------------------------------


@dataclasses.dataclass
class FakeSupervisor:
    url: str
    requests: list[tuple[str, str, dict[str, Any]]]  # path, Authorization, JSON body
    status: int = 200


@contextmanager
def fake_supervisor(status: int = 200) -> Iterator[FakeSupervisor]:
    fake = FakeSupervisor("", [], status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.requests.append((self.path, self.headers.get("Authorization", ""), body))
            answer = {"result": "ok", "data": {"uuid": "abc123"}} if fake.status == 200 else {"result": "error"}
            data = json.dumps(answer).encode()
            self.send_response(fake.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_discovery(supervisor: FakeSupervisor, port: int, wait: float) -> asyncio.subprocess.Process:
    env = {**os.environ, "SUPERVISOR_TOKEN": "secret-token", "MINERVA_SUPERVISOR_URL": supervisor.url}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "discovery",
        "--port",
        str(port),
        "--wait",
        str(wait),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def asr_app(port: int) -> App:
    return App(Settings(asr_uri=ListenUri("tcp", "127.0.0.1", port), discovery=DiscoverySettings(enabled=False)))


async def test_discovery_waits_for_the_asr_describe_then_announces_it() -> None:
    port = free_port()
    with fake_supervisor() as supervisor:
        proc = await start_discovery(supervisor, port, wait=60)
        try:
            await asyncio.sleep(1.5)
            assert proc.returncode is None and supervisor.requests == []  # nothing answers yet: no announcement
            app = asr_app(port)
            await app.start()
            try:
                _, err = await asyncio.wait_for(proc.communicate(), 30)
            finally:
                await app.stop()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert supervisor.requests == [
        (
            "/discovery",
            "Bearer secret-token",
            {"service": "wyoming", "config": {"uri": f"tcp://{socket.gethostname()}:{port}"}},
        )
    ]
    assert "Sent discovery information" in err.decode()


async def test_a_refused_announcement_is_logged_and_does_not_fail_the_addon() -> None:
    port = free_port()
    with fake_supervisor(status=400) as supervisor:
        app = asr_app(port)
        await app.start()
        try:
            proc = await start_discovery(supervisor, port, wait=30)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            await app.stop()
    assert proc.returncode == 0
    assert len(supervisor.requests) == 1
    assert "Discovery message to Home Assistant failed" in err.decode() and "HTTP 400" in err.decode()


async def test_no_asr_service_means_no_announcement() -> None:
    with fake_supervisor() as supervisor:
        proc = await start_discovery(supervisor, free_port(), wait=1)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert supervisor.requests == []
    assert "never answered describe" in err.decode()


# --- Docker image and compose ------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(
        r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    )
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip()
    ]


def test_docker_image_exposes_the_cli_ports_runs_as_non_root_and_checks_health() -> None:
    instructions = dockerfile_instructions(DOCKER / "Dockerfile")
    exposed = {port for kind, args in instructions if kind == "EXPOSE" for port in args.split()}
    assert exposed == cli_ports(parse_settings([], env={}))
    user = [args for kind, args in instructions if kind == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    assert any(kind == "VOLUME" and "/data" in args for kind, args in instructions)
    assert any(kind == "HEALTHCHECK" and "wyoming_minerva.health" in args for kind, args in instructions)
    assert ("ENTRYPOINT", '["wyoming-minerva"]') in instructions
    # The build copies only what the package needs; the dockerignore lets exactly that through.
    copies = [args for kind, args in instructions if kind == "COPY" and "--from" not in args]
    assert copies == ["pyproject.toml README.md ./", "wyoming_minerva ./wyoming_minerva"]
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert {"!pyproject.toml", "!README.md", "!wyoming_minerva/"} <= set(ignore)


def test_addon_image_checks_health_and_installs_the_package() -> None:
    instructions = dockerfile_instructions(ADDON / "Dockerfile")
    assert instructions[0] == ("ARG", "BUILD_FROM")
    assert any(kind == "HEALTHCHECK" and "wyoming_minerva.health" in args for kind, args in instructions)
    assert any(kind == "RUN" and "wyoming-minerva @ ${MINERVA_SOURCE}" in args for kind, args in instructions)
    assert ("COPY", "rootfs /") in instructions


def test_compose_builds_the_image_and_keeps_models_in_a_volume() -> None:
    compose = load_yaml(DOCKER / "compose.yaml")
    service = compose["services"]["minerva"]
    assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    assert any(volume.endswith(":/data") for volume in service["volumes"])
    assert service["network_mode"] == "host"  # so zeroconf announces the host's LAN address
    # Every MINERVA_* variable it sets is one the CLI understands.
    env = {k: str(v) for k, v in service.get("environment", {}).items()}
    assert parse_settings([], env=env).discovery.name == "minerva"
