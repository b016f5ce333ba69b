"""The catalog API (/v1/catalog, /v1/jobs) against loopback file servers: a small piper-voices index with fake
voice files, a fake Hugging Face hub for a faster-whisper model and an operator's wake word index."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from catalog_helpers import (
    FileServer,
    closed_port,
    fake_voice_loader,
    file_server,
    folder_files,
    random_bytes,
    serve_voices,
    serve_whisper,
    sse_events,
    voice_files,
)

from wyoming_minerva.app import App
from wyoming_minerva.catalog import CatalogSettings, Kind
from wyoming_minerva.catalog.entries import RemoteFile
from wyoming_minerva.catalog.errors import IntegrityError
from wyoming_minerva.catalog.fetch import download
from wyoming_minerva.catalog.service import CatalogChange, CatalogService
from wyoming_minerva.http import installs
from wyoming_minerva.http.app import create_app
from wyoming_minerva.http.server import HttpServer
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import (
    AsrSettings,
    DiscoverySettings,
    HttpSettings,
    ListenUri,
    Service,
    Settings,
    TtsSettings,
    WakeSettings,
)
from wyoming_minerva.stt.service import SpeechToText
from wyoming_minerva.stt.whisper import resolve_model, whisper_engines
from wyoming_minerva.tts.piper import TextToSpeech
from wyoming_minerva.wake.service import WakeWords

pytestmark = pytest.mark.timeout(120)

VOICE = "en_US-test-medium"
MODEL_BYTES = 3 * 1024 * 1024


@dataclass
class Engines:
    stt: Any = None  # no speech-to-text in these tests
    tts: Any = None
    wake: Any = None
    extras: dict[str, object] = field(default_factory=dict)


@dataclass
class Served:
    client: httpx.AsyncClient
    catalog: CatalogService
    tts: TextToSpeech
    wake: WakeWords
    stt: SpeechToText | None
    data: Path
    changes: list[CatalogChange]

    async def install(self, entry_id: str) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        response = await self.client.post(f"/v1/catalog/{entry_id}/install")
        assert response.status_code == 202, response.text
        job = response.json()
        assert response.headers["location"] == f"/v1/jobs/{job['id']}"
        return job, await sse_events(self.client, f"/v1/jobs/{job['id']}/events")


@asynccontextmanager
async def served(
    tmp_path: Path,
    catalog: CatalogSettings,
    local_files_only: bool = False,
    api_key: str | None = None,
    stt_models: tuple[str, ...] = (),
) -> AsyncIterator[Served]:
    """create_app as the App builds it (its catalog, the engines' rescan hook), with fake voices and, when
    `stt_models` are given, a speech-to-text engine that finds models only in the data dir."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    manager = ModelManager(workers=2, queue_size=8)
    tts = TextToSpeech(
        TtsSettings(), manager, (data,), local_files_only=True, load_voice=fake_voice_loader, rescan_seconds=3600
    )
    wake = WakeWords(WakeSettings(), manager, installed_dirs=(data / "wake",))
    stt = None
    if stt_models:
        asr = AsrSettings(models=stt_models)
        stt = SpeechToText(asr, manager, whisper_engines(asr, (data,), local_files_only=True), (data,))
    http = HttpSettings(host="127.0.0.1", port=0, api_key=api_key)
    settings = Settings(http=http, data_dirs=(data,), local_files_only=local_files_only, catalog=catalog)
    app = create_app(settings, Engines(stt=stt, tts=tts, wake=wake), manager)
    service = app.state.minerva_catalog
    assert isinstance(service, CatalogService)
    changes: list[CatalogChange] = []
    service.on_change.append(changes.append)
    server = HttpServer(app, "127.0.0.1", 0, grace_seconds=1)
    await server.start()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30, headers=headers)
    try:
        yield Served(client, service, tts, wake, stt, data, changes)
    finally:
        await client.aclose()
        await server.stop()
        await service.aclose()
        await wake.close()
        await manager.close()


def one_voice(model: bytes | None = None) -> dict[str, dict[str, bytes]]:
    return {VOICE: voice_files(VOICE, model if model is not None else random_bytes(MODEL_BYTES))}


def model_path(voices: dict[str, dict[str, bytes]]) -> str:
    return next(path for path in voices[VOICE] if path.endswith(".onnx"))


def staged_files(data: Path) -> list[str]:
    return folder_files(data / ".minerva-downloads") if (data / ".minerva-downloads").exists() else []


async def first_bytes(client: httpx.AsyncClient, job_id: str) -> None:
    """Returns once the job has downloaded something."""
    async with asyncio.timeout(30), client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["bytes"] > 0:
                return


async def model_ids(client: httpx.AsyncClient) -> set[str]:
    response = await client.get("/v1/models")
    return {card["id"] for card in response.json()["data"]}


async def wake_models(client: httpx.AsyncClient) -> set[str]:
    """The wake word models the console shows (what Wyoming describe offers)."""
    services = (await client.get("/v1/console/status")).json()["services"]
    return {m["name"] for card in services if card["service"] == "wake" for m in card["models"]}


async def test_an_install_reports_progress_in_order_to_100_percent_and_the_voice_is_served_at_once(
    tmp_path: Path,
) -> None:
    voices = one_voice()
    with file_server(FileServer(delay=0.01)) as server:
        url = serve_voices(server, voices)
        async with served(tmp_path, CatalogSettings(voices_url=url)) as api:
            assert VOICE not in await model_ids(api.client)
            job, events = await api.install(f"voice:{VOICE}")
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"progress"}, kinds
    progress = [data for kind, data in events if kind == "progress"]
    total = sum(len(b) for b in voices[VOICE].values())
    assert all(p["total"] == total for p in progress)
    assert [p["bytes"] for p in progress] == sorted(p["bytes"] for p in progress)
    percents = [p["percent"] for p in progress if p["percent"] is not None]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert len({p for p in percents if 0 < p < 100}) >= 2, "no figures while downloading"
    phases = list(dict.fromkeys(p["phase"] for p in progress))
    assert phases[-3:] == ["downloading", "verifying", "installing"], phases
    assert any(p["rate"] > 0 for p in progress)
    done = events[-1][1]
    assert done["state"] == "done" and done["percent"] == 100.0 and done["bytes"] == total and done["id"] == job["id"]
    assert folder_files(api.data) == [f"{VOICE}.onnx", f"{VOICE}.onnx.json"]
    assert (api.data / f"{VOICE}.onnx").read_bytes() == voices[VOICE][model_path(voices)]
    assert api.changes == [CatalogChange("installed", Kind.VOICE, VOICE)]


async def test_the_new_voice_is_listed_installed_and_in_v1_models(tmp_path: Path) -> None:
    voices = one_voice()
    with file_server(FileServer()) as server:
        url = serve_voices(server, voices)
        async with served(tmp_path, CatalogSettings(voices_url=url)) as api:
            listed = (await api.client.get("/v1/catalog", params={"kind": "voice"})).json()
            entry = next(x for x in listed["data"] if x["id"] == f"voice:{VOICE}")
            assert (
                entry["available"]
                and not entry["installed"]
                and entry["size_bytes"] == MODEL_BYTES + len(voices[VOICE][f"{model_path(voices)}.json"])
            )
            assert listed["sources"][0] == {"kind": "voice", "url": url, "ok": True, "entries": 1, "error": None}
            await api.install(f"voice:{VOICE}")
            assert VOICE in await model_ids(api.client)
            listed = (await api.client.get("/v1/catalog", params={"kind": "voice", "installed": "true"})).json()
            names = {x["name"]: x for x in listed["data"]}
            assert names[VOICE]["installed"] and names[VOICE]["size_on_disk"] == entry["size_bytes"]
            assert names[VOICE]["removable"] and not names[VOICE]["loaded"]
            assert names["en_US-joe-medium"]["installed"] and not names["en_US-joe-medium"]["removable"]
            assert names["en_US-joe-medium"]["default"]
            again = await api.client.post(f"/v1/catalog/voice:{VOICE}/install")
            assert again.status_code == 409 and again.json()["error"]["code"] == "already_installed"


async def test_a_cut_download_resumes_from_where_it_stopped(tmp_path: Path) -> None:
    voices = one_voice()
    path = model_path(voices)
    cut = 1024 * 1024
    with file_server(FileServer(cut_after={path: cut})) as server:
        url = serve_voices(server, voices)
        async with served(tmp_path, CatalogSettings(voices_url=url)) as api:
            _, events = await api.install(f"voice:{VOICE}")
        assert events[-1][0] == "done", events[-1]
        assert [r.range for r in server.gets(path)] == [None, f"bytes={cut}-"]
        assert server.sent[path] == MODEL_BYTES, "bytes sent before the cut were sent again"
    assert (api.data / f"{VOICE}.onnx").read_bytes() == voices[VOICE][path]
    assert staged_files(api.data) == []


async def test_a_server_that_ignores_range_restarts_the_file_and_it_still_checks_out(tmp_path: Path) -> None:
    voices = one_voice()
    path = model_path(voices)
    with file_server(FileServer(cut_after={path: 512 * 1024}, honour_range=False)) as server:
        url = serve_voices(server, voices)
        async with served(tmp_path, CatalogSettings(voices_url=url)) as api:
            _, events = await api.install(f"voice:{VOICE}")
    assert events[-1][0] == "done", events[-1]
    assert (api.data / f"{VOICE}.onnx").read_bytes() == voices[VOICE][path]


async def test_a_hash_mismatch_is_an_error_and_leaves_nothing_behind(tmp_path: Path) -> None:
    voices = one_voice()
    with file_server(FileServer()) as server:
        url = serve_voices(server, voices, md5={f"{VOICE}.onnx": "0" * 32})
        async with served(tmp_path, CatalogSettings(voices_url=url)) as api:
            job, events = await api.install(f"voice:{VOICE}")
            final = (await api.client.get(f"/v1/jobs/{job['id']}")).json()
            listed = (await api.client.get("/v1/catalog", params={"q": "test"})).json()["data"]
    kind, data = events[-1]
    assert kind == "error" and data["state"] == "error"
    assert data["error"]["code"] == "hash_mismatch" and "md5" in data["error"]["message"]
    assert final["state"] == "error" and final["error"]["code"] == "hash_mismatch"
    assert folder_files(api.data) == [], "a file of the failed install was left behind"
    assert [x["installed"] for x in listed] == [False]
    assert api.changes == []


async def test_an_unreachable_catalog_is_a_clear_error_at_once(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/voices.json"
    async with served(tmp_path, CatalogSettings(voices_url=url)) as api:
        started = time.monotonic()
        response = await api.client.post(f"/v1/catalog/voice:{VOICE}/install")
        assert time.monotonic() - started < 5
        error = response.json()["error"]
        assert response.status_code == 502 and error["code"] == "catalog_unreachable"
        assert url in error["message"] and "refused" in error["message"]
        listed = (await api.client.get("/v1/catalog", params={"kind": "voice"})).json()
    assert listed["sources"][0]["ok"] is False and "refused" in listed["sources"][0]["error"]
    assert [x["id"] for x in listed["data"]] == ["voice:en_US-joe-medium"], "installed voices are listed offline"


async def test_a_file_host_gone_after_the_index_was_read_fails_the_job_at_once(tmp_path: Path) -> None:
    voices = one_voice()
    with ExitStack() as host:
        server = host.enter_context(file_server(FileServer()))
        url = serve_voices(server, voices)
        async with served(tmp_path, CatalogSettings(voices_url=url)) as api:
            assert (await api.client.get("/v1/catalog")).status_code == 200  # the index is cached now
            host.close()  # and the host goes away
            started = time.monotonic()
            _, events = await api.install(f"voice:{VOICE}")
            assert time.monotonic() - started < 5
    kind, data = events[-1]
    assert kind == "error" and data["error"]["code"] == "network_error", data
    assert "127.0.0.1" in data["error"]["message"] and "refused" in data["error"]["message"]
    assert folder_files(api.data) == []


async def test_a_missing_file_fails_the_job_with_the_http_status(tmp_path: Path) -> None:
    voices = one_voice()
    with file_server(FileServer()) as server:
        url = serve_voices(server, voices)
        del server.files[model_path(voices)]
        async with served(tmp_path, CatalogSettings(voices_url=url)) as api:
            _, events = await api.install(f"voice:{VOICE}")
    kind, data = events[-1]
    assert kind == "error" and data["error"]["code"] == "download_failed" and "404" in data["error"]["message"]


async def test_local_files_only_refuses_installs_at_once(tmp_path: Path) -> None:
    async with served(tmp_path, CatalogSettings(), local_files_only=True) as api:
        response = await api.client.post(f"/v1/catalog/voice:{VOICE}/install")
        listed = (await api.client.get("/v1/catalog", params={"kind": "voice"})).json()
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "downloads_disabled"
    assert "--local-files-only" in response.json()["error"]["message"]
    assert listed["downloads"] is False and "--local-files-only" in listed["sources"][0]["error"]


async def test_two_installs_of_one_id_share_one_job_and_one_download(tmp_path: Path) -> None:
    voices = one_voice()
    with file_server(FileServer(delay=0.005)) as server:
        url = serve_voices(server, voices)
        async with served(tmp_path, CatalogSettings(voices_url=url)) as api:
            first, second = await asyncio.gather(
                *(api.client.post(f"/v1/catalog/voice:{VOICE}/install") for _ in range(2))
            )
            assert first.status_code == second.status_code == 202
            assert first.json()["id"] == second.json()["id"]
            events = await sse_events(api.client, f"/v1/jobs/{first.json()['id']}/events")
        assert events[-1][0] == "done"
        assert len(server.gets(model_path(voices))) == 1
        assert len(server.gets("/voices.json")) == 1


async def test_a_cancelled_install_stops_and_leaves_nothing(tmp_path: Path) -> None:
    voices = one_voice()
    with file_server(FileServer(delay=0.05)) as server:
        url = serve_voices(server, voices)
        async with served(tmp_path, CatalogSettings(voices_url=url)) as api:
            job = (await api.client.post(f"/v1/catalog/voice:{VOICE}/install")).json()
            await first_bytes(api.client, job["id"])
            watching = asyncio.create_task(sse_events(api.client, f"/v1/jobs/{job['id']}/events"))
            cancelled = await api.client.delete(f"/v1/jobs/{job['id']}")
            events = await watching
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert events[-1][0] == "error" and events[-1][1]["error"]["code"] == "cancelled"
    assert server.sent[model_path(voices)] < MODEL_BYTES
    assert folder_files(api.data) == []


async def test_a_voice_in_use_is_not_removed_and_an_idle_one_is(tmp_path: Path) -> None:
    voices = one_voice(random_bytes(4096))
    with file_server(FileServer()) as server:
        url = serve_voices(server, voices)
        async with served(tmp_path, CatalogSettings(voices_url=url)) as api:
            await api.install(f"voice:{VOICE}")
            speech = await api.tts.open(VOICE)
            speaking = speech.stream("First sentence. Second sentence. Third one.")
            await anext(speaking)  # the answer is being spoken: the voice is held
            refused = await api.client.delete(f"/v1/catalog/voice:{VOICE}")
            assert refused.status_code == 409 and refused.json()["error"]["code"] == "model_in_use"
            assert (api.data / f"{VOICE}.onnx").is_file()
            await speaking.aclose()  # type: ignore[attr-defined]  # an async generator
            removed = await api.client.delete(f"/v1/catalog/voice:{VOICE}")
            assert removed.status_code == 200 and removed.json() == {
                "id": f"voice:{VOICE}",
                "object": "catalog.entry.deleted",
                "deleted": True,
            }
            assert folder_files(api.data) == []
            assert VOICE not in await model_ids(api.client)
            bundled = await api.client.delete("/v1/catalog/voice:en_US-joe-medium")
            unknown = await api.client.delete("/v1/catalog/voice:en_US-nobody-low")
            bad = await api.client.delete("/v1/catalog/voice:..%2F..%2Fetc")
    assert [c.action for c in api.changes] == ["installed", "removed"]
    assert bundled.status_code == 409 and bundled.json()["error"]["code"] == "not_removable"
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_installed"
    assert bad.status_code in (400, 404)


async def test_a_whisper_model_installs_from_its_hub_repository_as_a_folder_the_engine_finds(tmp_path: Path) -> None:
    files = {
        "config.json": b'{"alignment_heads": []}',
        "model.bin": random_bytes(2 * 1024 * 1024, seed=3),
        "tokenizer.json": b"{}",
        "vocabulary.txt": b"a\nb\n",
    }
    programs = ("tiny.en", "tiny-int8")
    with file_server(FileServer()) as server:
        serve_whisper(server, "rhasspy/faster-whisper-tiny-int8", files)
        async with served(tmp_path, CatalogSettings(whisper_hub_url=server.base), stt_models=programs) as api:
            assert api.stt is not None
            api.stt.rescan()  # its model is not installed (and the engine may not download): not offered
            assert "tiny-int8" not in await model_ids(api.client)
            entry = (await api.client.get("/v1/catalog/stt:tiny-int8")).json()
            _, events = await api.install("stt:tiny-int8")
            assert "tiny-int8" in await model_ids(api.client), "the installed program is not offered"
            folder = resolve_model("tiny-int8", (api.data,), local_files_only=True)
            assert folder == api.data / "tiny-int8" and folder_files(folder) == sorted(files)
            listed = (await api.client.get("/v1/catalog", params={"kind": "stt", "installed": "true"})).json()
            removed = await api.client.delete("/v1/catalog/stt:tiny-int8")
            assert removed.status_code == 200, removed.text
            assert "tiny-int8" not in await model_ids(api.client)
            assert [p.name for p in api.stt.programs] == ["tiny.en"]
        assert not [r for r in server.requests if "README" in r.path]
    assert {f["name"]: f["sha256"] for f in entry["files"]} == {
        "config.json": None,
        "model.bin": hashlib.sha256(files["model.bin"]).hexdigest(),
        "tokenizer.json": None,
        "vocabulary.txt": None,
    }
    assert entry["size_bytes"] == sum(map(len, files.values()))
    assert events[-1][0] == "done", events[-1]
    assert "stt:tiny-int8" in {x["id"] for x in listed["data"]}
    assert not (api.data / "tiny-int8").exists()


async def test_a_wake_word_installs_from_the_operators_index(tmp_path: Path) -> None:
    model = random_bytes(20_000, seed=5)
    index = {"models": [{"name": "hey_test", "engine": "openwakeword", "phrase": "Hey Test", "files": [
        {"name": "hey_test.tflite", "url": "models/hey_test.tflite", "size_bytes": len(model),
         "sha256": hashlib.sha256(model).hexdigest()}]}]}  # fmt: skip
    with file_server(FileServer()) as server:
        server.files["/wake/index.json"] = json.dumps(index).encode()
        server.files["/wake/models/hey_test.tflite"] = model
        async with served(tmp_path, CatalogSettings(wake_catalog_url=server.url("/wake/index.json"))) as api:
            assert api.wake.catalog.find("hey_test") is None
            _, events = await api.install("wake:hey_test")
            listed = (await api.client.get("/v1/catalog", params={"kind": "wake", "installed": "true"})).json()
            assert "hey_test" in await wake_models(api.client), "the installed wake word is not offered"
            assert (api.data / "wake" / "hey_test.tflite").read_bytes() == model
            removed = await api.client.delete("/v1/catalog/wake:hey_test")
            assert removed.status_code == 200, removed.text
            assert "hey_test" not in await wake_models(api.client)
    assert events[-1][0] == "done", events[-1]
    assert folder_files(api.data / "wake") == []
    names = {x["name"]: x for x in listed["data"]}
    assert names["hey_test"]["removable"] and names["hey_test"]["description"] == "Hey Test (openWakeWord)"
    assert not names["okay_nabu"]["removable"]


async def test_the_catalog_needs_the_api_key_when_one_is_set_and_the_page_does_not(tmp_path: Path) -> None:
    async with served(tmp_path, CatalogSettings(), local_files_only=True, api_key="sesame") as api:
        allowed = await api.client.get("/v1/catalog")
        async with httpx.AsyncClient(base_url=str(api.client.base_url)) as keyless:
            refused = {p: (await keyless.get(p)).status_code for p in ("/v1/catalog", "/v1/console/status")}
            page = {p: (await keyless.get(p)).status_code for p in ("/", "/console/app.js", "/console/app.css")}
    assert allowed.status_code == 200
    assert refused == {"/v1/catalog": 401, "/v1/console/status": 401}
    assert page == {"/": 200, "/console/app.js": 200, "/console/app.css": 200}


async def test_an_install_larger_than_the_free_space_fails_before_downloading(tmp_path: Path) -> None:
    voices = one_voice(random_bytes(4096))
    with file_server(FileServer()) as server:
        url = serve_voices(server, voices)
        index = json.loads(server.files["/voices.json"])
        index[VOICE]["files"][model_path(voices).lstrip("/")]["size_bytes"] = 10**18
        server.files["/voices.json"] = json.dumps(index).encode()
        async with served(tmp_path, CatalogSettings(voices_url=url)) as api:
            _, events = await api.install(f"voice:{VOICE}")
        assert server.gets(model_path(voices)) == []
    kind, data = events[-1]
    assert kind == "error" and data["error"]["code"] == "insufficient_storage", data
    assert folder_files(api.data) == []


async def test_a_file_of_unknown_size_is_cut_off_at_the_limit(tmp_path: Path) -> None:
    with file_server(FileServer()) as server:
        server.files["/big.bin"] = random_bytes(64 * 1024)
        remote = RemoteFile("big.bin", server.url("/big.bin"))
        async with httpx.AsyncClient() as client:
            with pytest.raises(IntegrityError):
                await download(client, remote, tmp_path / "big.part", lambda *_: None, retries=0, max_bytes=16 * 1024)


async def test_the_rescan_hook_asks_each_engine_that_can_rescan() -> None:
    class Rescanning:
        def __init__(self) -> None:
            self.calls = 0

        async def rescan(self) -> None:
            self.calls += 1

    tts, wake = Rescanning(), Rescanning()
    hook = installs.rescan_engines(Engines(tts=tts, wake=wake))
    for change in (
        CatalogChange("installed", Kind.VOICE, "en_US-x-low"),
        CatalogChange("removed", Kind.STT, "small-int8"),  # no speech-to-text engine here: nothing to ask
        CatalogChange("installed", Kind.WAKE, "hey_x"),
    ):
        result = hook(change)
        if result is not None:
            await result
    assert (tts.calls, wake.calls) == (1, 1)


async def test_the_app_serves_the_console_with_the_ports_really_bound_and_closes_its_catalog(tmp_path: Path) -> None:
    settings = Settings(
        asr_uri=ListenUri("tcp", "127.0.0.1", 0),
        http=HttpSettings(host="127.0.0.1", port=0),
        data_dirs=(tmp_path,),
        local_files_only=True,
        discovery=DiscoverySettings(enabled=False),
    )
    app = App(settings)
    await app.start()
    try:
        assert app.catalog is not None
        catalog = app.catalog
        ports = {"asr": app.port(Service.ASR), "http": app.http_port}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30) as client:
            status = (await client.get("/v1/console/status")).json()
            page = await client.get("/")
    finally:
        await app.stop()
    cards = {card["service"]: card for card in status["services"]}
    assert cards["asr"]["address"] == f"tcp://127.0.0.1:{ports['asr']}" and cards["asr"]["running"]
    assert cards["http"]["address"] == f"http://127.0.0.1:{ports['http']}"
    assert not cards["tts"]["running"] and cards["tts"]["address"] is None  # the API's engine, no Wyoming port
    assert [m["name"] for m in cards["tts"]["models"]] == ["en_US-joe-medium"]
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert app.catalog is None and catalog.jobs.active() == []
    with pytest.raises(RuntimeError):  # its HTTP client is closed
        await catalog.sources.client.get("http://127.0.0.1:1/")
