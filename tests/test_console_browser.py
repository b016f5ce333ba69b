"""The console (GET /) in a real headless Chromium (Debian's `chromium`, driven by Playwright's Python package):
it loads without console errors, shows the services, speaks an answer, transcribes an upload and the microphone,
installs a voice from a loopback catalog with the bar reaching 100 %, and shows a wake word detection sent by a
Wyoming client. Every panel is saved as a screenshot; the paths are printed (run with -s to see them)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from catalog_helpers import FileServer, file_server, serve_voices, voice_files
from conftest import ENGLISH, FIXTURES, fixture_path, local_stt, wyoming_client, wyoming_server
from wyoming.audio import AudioChunk, AudioStart
from wyoming.wake import Detect

from wyoming_minerva.audio import read_wav
from wyoming_minerva.catalog import CatalogSettings
from wyoming_minerva.handlers.wake import WakeHandler
from wyoming_minerva.http import console
from wyoming_minerva.http.app import create_app
from wyoming_minerva.http.deps import HttpContext
from wyoming_minerva.http.server import HttpServer
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import (
    AsrSettings,
    DiscoverySettings,
    HttpSettings,
    ListenUri,
    Settings,
    TtsSettings,
    WakeSettings,
)
from wyoming_minerva.tts.piper import TextToSpeech
from wyoming_minerva.tts.voices import bundled_voice
from wyoming_minerva.wake.service import WakeWords

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip
NEW_VOICE = "en_GB-minerva-medium"
MIC_RECORDING = FIXTURES / "asr" / "living_room_light_en.wav"

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="no /usr/bin/chromium (apt-get install chromium)"),
]


@dataclass
class Engines:
    stt: Any = None
    tts: TextToSpeech | None = None
    wake: WakeWords | None = None
    extras: dict[str, object] = field(default_factory=dict)


@dataclass
class Console:
    browser: Any
    page: Any
    base: str
    wake_port: int
    shots: Path
    errors: list[str]

    async def shoot_page(self, page: Any, name: str) -> Path:
        path = self.shots / f"{name}.png"
        await page.screenshot(path=str(path))
        print(f"console screenshot: {path}")
        return path

    async def shoot(self, name: str, selector: str | None = None) -> Path:
        path = self.shots / f"{name}.png"
        if selector:
            await self.page.locator(selector).screenshot(path=str(path))
        else:
            await self.page.screenshot(path=str(path), full_page=True)
        print(f"console screenshot: {path}")
        return path


def browser_args() -> list[str]:
    if not MIC_RECORDING.is_file():
        return ARGS
    # The microphone hears a recording (Chromium loops it) and is allowed without a prompt.
    return [*ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={MIC_RECORDING}"]  # fmt: skip


@pytest.fixture(scope="module")
async def ui(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Console]:
    playwright_api = pytest.importorskip("playwright.async_api")
    joe = bundled_voice()
    assert joe is not None, "the bundled voice is missing"
    data = tmp_path_factory.mktemp("data")
    shots = tmp_path_factory.mktemp("console-screenshots")
    manager = ModelManager(workers=2, queue_size=8)
    tts = TextToSpeech(TtsSettings(), manager, (data,), local_files_only=True, rescan_seconds=0)
    wake = WakeWords(WakeSettings(), manager)
    stt = local_stt(manager, AsrSettings(models=ENGLISH))
    new_voice = voice_files(NEW_VOICE, joe.model.read_bytes(), joe.config.read_bytes())
    try:
        async with wyoming_server("wake", lambda sink: WakeHandler(sink, wake)) as wyoming:
            with file_server(FileServer(delay=0.002)) as files:
                catalog_url = serve_voices(files, {NEW_VOICE: new_voice})
                settings = Settings(
                    wake_uri=ListenUri("tcp", "127.0.0.1", wyoming.port),
                    http=HttpSettings(host="127.0.0.1", port=0),
                    data_dirs=(data,),
                    discovery=DiscoverySettings(enabled=False),
                    catalog=CatalogSettings(voices_url=catalog_url),
                )
                engines = Engines(stt=stt, tts=tts, wake=wake)
                app = create_app(settings, engines, manager, services=lambda ctx: real_ports(ctx, server))
                service = app.state.minerva_catalog
                server = HttpServer(app, "127.0.0.1", 0, grace_seconds=1)
                await server.start()
                async with playwright_api.async_playwright() as playwright:
                    browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=browser_args())
                    page = await browser.new_page(viewport={"width": 1280, "height": 900})
                    errors: list[str] = []
                    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    base = f"http://127.0.0.1:{server.port}"
                    await page.goto(base + "/")
                    await page.wait_for_selector('body[data-ready="1"]', timeout=30_000)
                    try:
                        yield Console(browser, page, base, wyoming.port, shots, errors)
                    finally:
                        await browser.close()
                        await server.stop()
                        await service.aclose()
    finally:
        await wake.close()
        await manager.close()
        print(f"console screenshots in {shots}")


def real_ports(ctx: HttpContext, server: HttpServer) -> list[console.ServiceCard]:
    """The services as the settings say, with the HTTP port really bound (what the App passes in production)."""
    cards = console.services_from_settings(ctx)
    return [c.model_copy(update={"address": f"http://127.0.0.1:{server.port}"}) if c.service == "http" else c
            for c in cards]  # fmt: skip


async def test_the_console_loads_without_errors_and_shows_the_services(ui: Console) -> None:
    rows = await ui.page.locator("#services-body tr").all_inner_texts()
    by_service = {row.split("\t")[0]: row for row in rows}
    assert set(by_service) == {"asr", "tts", "wake", "http"}, rows
    assert f"tcp://127.0.0.1:{ui.wake_port}" in by_service["wake"] and "okay_nabu" in by_service["wake"]
    assert "piper" in by_service["tts"] and "en_US-joe-medium" in by_service["tts"]
    assert "faster-whisper" in by_service["asr"] and "tiny.en" in by_service["asr"]
    assert ui.base in by_service["http"]
    figures = await ui.page.locator("#figures-list").inner_text()
    assert "Inference queue" in figures and "HTTP requests" in figures
    await ui.shoot("services", "#services")
    await ui.shoot("figures", "#figures")
    assert ui.errors == []


async def test_it_speaks_an_answer(ui: Console) -> None:
    page = ui.page
    await page.fill("#speak-text", "The kitchen lights are on.")
    await page.select_option("#speak-voice", "en_US-joe-medium")
    await page.fill("#speak-speed", "1.25")
    await page.click("#speak-button")
    await page.wait_for_function(
        "() => { const a = document.getElementById('speak-audio'); return a.readyState >= 2 && a.duration > 0.5; }",
        timeout=60_000,
    )
    duration = await page.evaluate("document.getElementById('speak-audio').duration")
    assert 0.5 < duration < 5, duration
    await page.wait_for_function("() => document.getElementById('speak-audio').played.length > 0", timeout=10_000)
    assert ui.errors == []


async def test_it_transcribes_an_uploaded_file(ui: Console) -> None:
    recording = fixture_path("asr/living_room_light_en.wav")
    await ui.page.set_input_files("#upload-file", str(recording))
    await ui.page.click("#upload-button")
    await ui.page.wait_for_function("() => document.getElementById('upload-state').textContent === 'Done.'",
                                    timeout=60_000)  # fmt: skip
    text = (await ui.page.inner_text("#upload-text")).lower()
    assert "living room" in text and "light" in text, text
    assert ui.errors == []


async def test_the_microphone_gives_a_live_transcript(ui: Console) -> None:
    if not MIC_RECORDING.is_file():
        pytest.skip(f"fixture recording {MIC_RECORDING} is not available")
    await ui.page.click("#mic-button")
    await ui.page.wait_for_function("() => /living room/i.test(document.getElementById('mic-text').textContent)",
                                    timeout=60_000)  # fmt: skip
    await ui.shoot("try-it", "#try")
    await ui.page.click("#mic-button")
    assert await ui.page.get_attribute("#mic-button", "aria-pressed") == "false"
    assert ui.errors == []


async def test_it_installs_a_voice_with_the_bar_reaching_100_percent(ui: Console) -> None:
    page = ui.page
    await page.evaluate("""() => {
        window.seenProgress = [];
        new MutationObserver(() => {
            for (const bar of document.querySelectorAll('#models-list progress')) {
                if (bar.hasAttribute('value')) window.seenProgress.push(Number(bar.value));
            }
        }).observe(document.getElementById('models-list'), {subtree: true, childList: true, attributes: true});
    }""")
    await page.fill("#models-query", "minerva")
    row = page.locator(f'#models-list li[data-id="voice:{NEW_VOICE}"]')
    await row.get_by_role("button", name=f"Install {NEW_VOICE}").click()
    await row.locator("progress").wait_for(timeout=10_000)
    await ui.shoot("models-installing", "#models")
    await row.get_by_role("button", name=f"Delete {NEW_VOICE}").wait_for(timeout=60_000)
    seen = await page.evaluate("window.seenProgress")
    assert seen and seen == sorted(seen) and seen[-1] == 100, seen
    assert "installed" in await row.inner_text()
    await page.wait_for_selector(f'#speak-voice option[value="{NEW_VOICE}"]', state="attached", timeout=10_000)
    await ui.shoot("models", "#models")
    assert ui.errors == []


async def test_it_shows_a_wake_detection_sent_by_a_wyoming_client(ui: Console) -> None:
    pcm, fmt = read_wav(fixture_path("wake/okay_nabu.wav").read_bytes())
    pcm += bytes(fmt.rate * 2)  # a second of silence after it
    async with wyoming_client(ui.wake_port) as client:
        await client.write_event(Detect(names=["okay_nabu"]).event())
        await client.write_event(AudioStart(rate=fmt.rate, width=2, channels=1).event())
        for offset in range(0, len(pcm), 2048):
            chunk = AudioChunk(rate=fmt.rate, width=2, channels=1, audio=pcm[offset : offset + 2048])
            await client.write_event(chunk.event())
        event = await asyncio.wait_for(client.read_event(), 20)
        assert event is not None and event.type == "detection"
    item = ui.page.locator("#wake-list li").first
    await item.wait_for(timeout=10_000)
    assert "okay_nabu" in await item.inner_text()
    await ui.shoot("wake", "#wake")
    assert ui.errors == []


async def test_the_whole_page_on_a_desktop_and_a_phone_in_light_and_dark(ui: Console) -> None:
    await ui.shoot("page-desktop-light")
    await ui.page.emulate_media(color_scheme="dark")
    await ui.page.set_viewport_size({"width": 390, "height": 844})
    await ui.shoot("page-phone-dark")
    width = await ui.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
    await ui.page.emulate_media(color_scheme="light")
    await ui.page.set_viewport_size({"width": 1280, "height": 900})
    assert ui.errors == []
    print(json.dumps(sorted(p.name for p in ui.shots.iterdir())))


async def test_the_api_key_is_asked_once_and_kept_for_the_browser_session(ui: Console, tmp_path: Path) -> None:
    manager = ModelManager(workers=1, queue_size=2)
    tts = TextToSpeech(TtsSettings(), manager, (), local_files_only=True)
    wake = WakeWords(WakeSettings(), manager)
    http = HttpSettings(host="127.0.0.1", port=0, api_key="sesame")
    settings = Settings(http=http, local_files_only=True, discovery=DiscoverySettings(enabled=False))
    app = create_app(settings, Engines(tts=tts, wake=wake), manager)
    server = HttpServer(app, "127.0.0.1", 0, grace_seconds=1)
    await server.start()
    context = await ui.browser.new_context()
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await page.goto(f"http://127.0.0.1:{server.port}/")
        await page.wait_for_selector("#key-dialog[open]")
        await ui.shoot_page(page, "api-key")
        await page.fill("#key-input", "sesame")
        await page.click("#key-form button[type=submit]")
        await page.wait_for_selector('body[data-ready="1"]', timeout=30_000)
        await page.reload()
        await page.wait_for_selector('body[data-ready="1"]', timeout=30_000)
        assert not await page.locator("#key-dialog").evaluate("d => d.open"), "the key was asked again"
        assert await page.evaluate("sessionStorage.getItem('minerva-api-key')") == "sesame"
        assert await page.evaluate("localStorage.length") == 0
        assert errors == []
    finally:
        await context.close()
        await server.stop()
        await app.state.minerva_catalog.aclose()
        await wake.close()
        await manager.close()
