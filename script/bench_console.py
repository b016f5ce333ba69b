"""script/bench console: the web console and the catalog's installs. Prints figures only.

- page weight: the bytes of GET / and its script and style (target < 150 KiB), and everything the page fetches
  on its first load in headless Chromium (API answers included);
- time until the page is usable (its services panel filled: the `console-usable` performance mark) in headless
  Chromium (/usr/bin/chromium), median of several fresh loads;
- install throughput: a voice install (download with md5 as it arrives, verify, atomic placement) against a plain
  streaming download of the same file from the same loopback server (target >= 0.9x). The file server runs in a
  child process (stopped by PID afterwards), so it never competes with the measured side for the GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the loopback file server of the catalog tests
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]  # fmt: skip
VOICE = "en_US-bench-medium"
PAGE_TARGET_KIB = 150
RATIO_TARGET = 0.9


# ---- the file server (child process) -------------------------------------------------------------


def serve(size_mib: int) -> None:
    """Child mode: serve a voice of `size_mib` MiB and its voices.json until SIGTERM; prints the index URL."""
    from catalog_helpers import FileServer, file_server, random_bytes, serve_voices, voice_files

    model = random_bytes(size_mib * 1024 * 1024)
    with file_server(FileServer(block=1024 * 1024)) as server:
        url = serve_voices(server, {VOICE: voice_files(VOICE, model)})
        print(url, flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


class ServerProcess:
    def __init__(self, size_mib: int) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # inherited: sigwait gets them
        try:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--serve", str(size_mib)], stdout=subprocess.PIPE, text=True, cwd=ROOT
            )
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        assert self.proc.stdout is not None
        self.index_url = self.proc.stdout.readline().strip()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---- install throughput ----------------------------------------------------------------------------


class NoUsage:
    """ModelUsage for a catalog with no engines: nothing is loaded, nothing is a default."""

    def loaded(self, model: Any) -> bool:
        return False

    def in_use(self, model: Any) -> bool | None:
        return False

    def release(self, model: Any) -> bool:
        return True

    def is_default(self, model: Any) -> bool:
        return False


async def plain_download(url: str, target: Path) -> float:
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60) as client, client.stream("GET", url) as response:
        response.raise_for_status()
        with target.open("wb") as out:
            async for chunk in response.aiter_raw(1024 * 1024):
                out.write(chunk)
    return time.perf_counter() - started


async def install_once(index_url: str, data: Path) -> float:
    from wyoming_minerva.catalog import CatalogSettings, Kind
    from wyoming_minerva.catalog.jobs import JobState
    from wyoming_minerva.catalog.service import CatalogService

    service = CatalogService(CatalogSettings(voices_url=index_url), (data,), False, NoUsage())
    try:
        await service.sources.index(Kind.VOICE)  # the index is read before the clock starts
        started = time.perf_counter()
        job, _ = await service.install(f"voice:{VOICE}")
        assert job.task is not None
        await job.task
        elapsed = time.perf_counter() - started
        assert job.state is JobState.DONE, job.snapshot()
        return elapsed
    finally:
        await service.aclose()


async def throughput(size_mib: int, rounds: int) -> None:
    server = ServerProcess(size_mib)
    try:
        async with httpx.AsyncClient() as client:
            index = json.loads((await client.get(server.index_url)).content)
        files = index[VOICE]["files"]
        model_path = next(p for p in files if p.endswith(".onnx"))
        model_url = server.index_url.rsplit("/", 1)[0] + "/" + model_path
        total = sum(f["size_bytes"] for f in files.values())
        plain, install = [], []
        with tempfile.TemporaryDirectory(prefix="minerva-bench-") as tmp:
            for i in range(rounds):
                data = Path(tmp) / f"data{i}"
                data.mkdir()
                for side in ("plain", "install") if i % 2 == 0 else ("install", "plain"):  # neither always first
                    if side == "plain":
                        target = Path(tmp) / "plain.bin"
                        plain.append(size_mib * 1024 * 1024 / await plain_download(model_url, target))
                        target.unlink()
                    else:
                        install.append(total / await install_once(server.index_url, data))
                got = hashlib.md5((data / f"{VOICE}.onnx").read_bytes()).hexdigest()
                assert got == files[model_path]["md5_digest"]
                shutil.rmtree(data)
            curl = curl_rate(model_url, Path(tmp) / "curl.bin")
    finally:
        server.stop()
    mib = 1024 * 1024
    p, i = statistics.median(plain), statistics.median(install)
    print(f"install throughput ({size_mib} MiB voice, md5 checked, {rounds} rounds, medians):")
    print(f"  plain streaming download: {p / mib:8.1f} MiB/s   (runs: {', '.join(f'{x / mib:.0f}' for x in plain)})")
    print(f"  catalog install:          {i / mib:8.1f} MiB/s   (runs: {', '.join(f'{x / mib:.0f}' for x in install)})")
    print(f"  ratio install / plain:    {i / p:8.2f}x       (target >= {RATIO_TARGET}x)")
    if curl:
        print(f"  (curl, same file:         {curl / mib:8.1f} MiB/s: the server is not the limit)")


def curl_rate(url: str, target: Path) -> float | None:
    """curl's own figure for the same file (bytes/s), for reference; None without curl."""
    try:
        done = subprocess.run(["curl", "-s", "-o", str(target), "-w", "%{speed_download}", url],
                              capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return float(done.stdout.strip().replace(",", "."))


# ---- the page -------------------------------------------------------------------------------------------


async def page_figures(loads: int) -> None:
    sys.path.insert(0, str(ROOT / "script"))
    from bench_common import free_port, server_process

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="minerva-bench-") as data:
        args = ["--http", f"127.0.0.1:{port}", "--wake-uri", f"tcp://127.0.0.1:{free_port()}",
                f"--data-dir={data}", "--local-files-only"]  # fmt: skip
        with server_process(args):
            base = f"http://127.0.0.1:{port}"
            await wait_http(base)
            async with httpx.AsyncClient(base_url=base) as client:
                script = await client.get("/console/app.js")
            if script.status_code != 200 or b"console-usable" not in script.content:
                raise SystemExit(f"the server at {base} does not serve the console (GET /console/app.js)")
            await measure_page(base, loads)


async def measure_page(base: str, loads: int) -> None:
    from playwright.async_api import async_playwright

    async with httpx.AsyncClient(base_url=base) as client:
        assets = {p: len((await client.get(p)).content) for p in ("/", "/console/app.js", "/console/app.css")}
    static = sum(assets.values())
    print("page weight (first load):")
    for path, size in assets.items():
        print(f"  {path:18s} {size / 1024:7.1f} KiB")
    print(f"  static total       {static / 1024:7.1f} KiB   (target < {PAGE_TARGET_KIB} KiB)")
    if not CHROMIUM.is_file():
        print("no /usr/bin/chromium: time to usable not measured")
        return
    usable: list[float] = []
    transferred: list[int] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        for _ in range(loads):
            context = await browser.new_context()
            page = await context.new_page()
            sizes: list[int] = []

            async def count(response: Any, sizes: list[int] = sizes) -> None:
                if "/events" not in response.url:  # the live feeds never end
                    sizes.append(len(await response.body()))

            page.on("response", count)
            await page.goto(base + "/")
            await page.wait_for_selector('body[data-ready="1"]', timeout=30_000)
            await page.wait_for_selector("#models-list li", timeout=30_000)  # the last panel to fill
            await page.wait_for_selector("#speak-voice option", state="attached", timeout=30_000)
            usable.append(await page.evaluate("performance.getEntriesByName('console-usable')[0].startTime"))
            transferred.append(sum(sizes))
            await context.close()
        await browser.close()
    print(f"  with API answers   {statistics.median(transferred) / 1024:7.1f} KiB   (median of {loads} loads)")
    print(f"time until usable in headless Chromium: median {statistics.median(usable):.0f} ms, "
          f"min {min(usable):.0f} ms, max {max(usable):.0f} ms ({loads} fresh loads)")  # fmt: skip


async def wait_http(base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{base} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=128, help="size of the voice model installed (MiB)")
    parser.add_argument("--rounds", type=int, default=4, help="plain downloads and installs each")
    parser.add_argument("--loads", type=int, default=5, help="fresh page loads timed in Chromium")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    print(f"({os.cpu_count()} CPUs; figures vary with the machine's load)")
    asyncio.run(page_figures(args.loads))
    asyncio.run(throughput(args.size_mib, args.rounds))


if __name__ == "__main__":
    main()
