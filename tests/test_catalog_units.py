"""The catalog's pure parts: index parsing (and its defences against a hostile index), ids, job feeds, usage."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from catalog_helpers import voice_files, voice_index

from wyoming_minerva.catalog import CatalogEntry, Kind, parse_entry_id
from wyoming_minerva.catalog.entries import BadEntryIdError, RemoteFile, is_safe_name
from wyoming_minerva.catalog.errors import HashMismatchError, IntegrityError
from wyoming_minerva.catalog.fetch import PartFile
from wyoming_minerva.catalog.installed import InstalledModel
from wyoming_minerva.catalog.jobs import Job, JobState, Phase
from wyoming_minerva.catalog.piper_index import voice_entries
from wyoming_minerva.catalog.usage import ManagerUsage
from wyoming_minerva.catalog.wake_index import wake_entries
from wyoming_minerva.catalog.whisper_index import resolved_entry, unresolved_entries, whisper_names
from wyoming_minerva.runtime.manager import ModelManager

INDEX_URL = "https://mirror.example/piper/voices.json?download=true"


def test_voices_json_becomes_entries_with_files_beside_the_index() -> None:
    files = voice_files("en_GB-alba-medium", b"model")
    index = json.loads(voice_index({"en_GB-alba-medium": files}))
    index["en_GB-alba-medium"]["files"]["en/en_GB/alba/medium/MODEL_CARD"] = {"size_bytes": 3, "md5_digest": "0" * 32}
    (entry,) = voice_entries(index, INDEX_URL)
    assert entry.id == "voice:en_GB-alba-medium" and entry.kind is Kind.VOICE
    assert entry.languages == ("en_GB",) and entry.quality == "medium" and entry.speakers == 1
    assert [f.name for f in entry.files] == ["en_GB-alba-medium.onnx", "en_GB-alba-medium.onnx.json"]
    assert entry.files[0].url == "https://mirror.example/piper/en/en_GB/alba/medium/en_GB-alba-medium.onnx"
    assert entry.files[0].md5 == hashlib.md5(b"model").hexdigest()
    assert entry.size == sum(len(b) for b in files.values())


def test_a_hostile_or_broken_index_entry_is_left_out() -> None:
    good = json.loads(voice_index({"en_US-ok-low": voice_files("en_US-ok-low", b"x")}))
    index: dict[str, Any] = dict(good)
    index["../../etc-passwd-low"] = good["en_US-ok-low"]
    escaping = json.loads(json.dumps(good["en_US-ok-low"]))
    escaping["files"] = {f"../../{path.rsplit('/', 1)[-1]}x": meta for path, meta in escaping["files"].items()}
    index["en_US-escape-low"] = escaping
    index["en_US-nofiles-low"] = {"language": {"code": "en_US"}}
    index["en_US-baddigest-low"] = json.loads(
        json.dumps(good["en_US-ok-low"]).replace('"md5_digest": "', '"md5_digest": "zz')
    )
    index["en_US-notadict-low"] = "nonsense"
    assert [e.name for e in voice_entries(index, INDEX_URL)] == ["en_US-ok-low"]


@pytest.mark.parametrize("name", ["", "..", "a/b", "../x", "a\\b", ".hidden", "x" * 200, "a b"])
def test_unsafe_names_are_refused(name: str) -> None:
    assert not is_safe_name(name)
    with pytest.raises(ValueError):
        RemoteFile(name=name, url="http://x/y")


def test_entry_ids_are_kind_and_a_safe_name() -> None:
    assert parse_entry_id("voice:en_US-lessac-medium") == (Kind.VOICE, "en_US-lessac-medium")
    assert parse_entry_id("stt:small.en-int8") == (Kind.STT, "small.en-int8")
    for bad in ("en_US-lessac-medium", "model:x", "stt:../x", "stt:", "voice:a/b", "wake:x y"):
        with pytest.raises(BadEntryIdError):
            parse_entry_id(bad)


def test_whisper_names_cover_sizes_int8_and_distil_and_resolve_from_a_hub_listing() -> None:
    names = whisper_names()
    for expected in ("tiny", "tiny.en", "base", "small", "medium", "large-v3", "small-int8", "distil-large-v3"):
        assert expected in names
    assert "large" not in names  # an alias of large-v3
    (entry,) = unresolved_entries(["small-int8"])
    assert entry.source == "rhasspy/faster-whisper-small-int8" and not entry.resolved and entry.size is None
    tree = [
        {"type": "file", "path": "model.bin", "size": 134, "lfs": {"oid": "a" * 64, "size": 9000}},
        {"type": "file", "path": "config.json", "size": 10},
        {"type": "file", "path": "vocabulary.json", "size": 20},
        {"type": "file", "path": "README.md", "size": 5},
        {"type": "file", "path": "sub/model.bin", "size": 5},
        {"type": "directory", "path": "onnx"},
    ]
    resolved = resolved_entry(entry, tree, "https://hub.example/")
    assert [f.name for f in resolved.files] == ["config.json", "vocabulary.json", "model.bin"]
    model = resolved.files[-1]
    assert model.size == 9000 and model.sha256 == "a" * 64
    assert model.url == "https://hub.example/rhasspy/faster-whisper-small-int8/resolve/main/model.bin"
    assert resolved.size == 9030
    with pytest.raises(ValueError):
        resolved_entry(entry, [{"type": "file", "path": "config.json", "size": 1}], "https://hub.example")
    with pytest.raises(ValueError):
        resolved_entry(entry, {"error": "not found"}, "https://hub.example")


def test_a_wake_index_names_micro_models_as_the_engine_does_and_needs_their_config() -> None:
    index = {
        "models": [
            {"name": "okay_house", "engine": "microwakeword", "files": [
                {"name": "okay_house.json", "url": "okay_house.json"},
                {"name": "okay_house.tflite", "url": "https://cdn.example/okay_house.tflite", "size_bytes": 5}]},
            {"name": "lonely", "engine": "microwakeword", "files": [{"name": "lonely.tflite", "url": "l.tflite"}]},
            {"name": "hey_x", "files": [{"name": "hey_x.tflite", "url": "m/hey_x.tflite", "md5": "F" * 32}]},
            {"name": "odd", "engine": "snowboy", "files": [{"name": "odd.pmdl", "url": "odd.pmdl"}]},
        ]
    }  # fmt: skip
    entries = {e.name: e for e in wake_entries(index, "https://example.org/wake/index.json")}
    assert sorted(entries) == ["hey_x", "okay_house_micro"]
    micro = entries["okay_house_micro"]
    assert [f.name for f in micro.files] == ["okay_house.tflite", "okay_house.json"]  # the config last
    assert micro.files[0].url == "https://cdn.example/okay_house.tflite"
    assert entries["hey_x"].files[0].url == "https://example.org/wake/m/hey_x.tflite"
    assert entries["hey_x"].files[0].md5 == "f" * 32
    with pytest.raises(ValueError):
        wake_entries([], "https://example.org/i.json")


def test_a_part_file_checks_size_and_digests_and_resumes_hashing_what_is_on_disk(tmp_path: Path) -> None:
    data = b"0123456789" * 1000
    remote = RemoteFile(
        "f.bin", "http://x/f.bin", len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
    )
    first = PartFile(tmp_path / "f.bin.part", remote)
    first.open()
    first.write(data[:4000])
    first.close()
    resumed = PartFile(tmp_path / "f.bin.part", remote)
    assert resumed.open() == 4000
    resumed.write(data[4000:])
    resumed.close()
    resumed.verify()
    short = PartFile(tmp_path / "g.part", remote)
    short.open()
    short.write(data[:-1])
    with pytest.raises(IntegrityError):
        short.verify()
    wrong = PartFile(tmp_path / "h.part", remote)
    wrong.open()
    wrong.write(data[:-1] + b"x")
    with pytest.raises(HashMismatchError):
        wrong.verify()


async def test_a_slow_watcher_of_a_job_misses_figures_but_no_phase_and_sees_the_end() -> None:
    job = Job("voice:x", phase=Phase.RESOLVING)
    job.total = 100
    feed = job.updates()
    first = await anext(feed)
    assert first is not None and first["phase"] == "resolving" and first["percent"] == 0.0
    job.set_phase(Phase.DOWNLOADING)
    for _ in range(10):
        job.add_progress(10, 10)
    job.set_phase(Phase.VERIFYING)
    job.set_phase(Phase.INSTALLING)
    job.finish(JobState.DONE)
    rest = [snapshot async for snapshot in feed]
    assert [s["phase"] for s in rest if s] == ["downloading", "verifying", "installing", "finished"]
    last = rest[-1]
    assert last is not None and last["state"] == "done" and last["percent"] == 100.0 and last["bytes"] == 100


async def test_a_quiet_job_feed_sends_keepalives() -> None:
    job = Job("voice:x")
    feed = job.updates(keepalive=0.01)
    assert (await anext(feed)) is not None
    assert (await anext(feed)) is None
    job.finish(JobState.ERROR, "network_error", "gone")
    last = await anext(feed)
    assert last is not None and last["error"] == {"code": "network_error", "message": "gone"}


async def test_usage_follows_the_model_manager_and_refuses_to_release_a_held_model(tmp_path: Path) -> None:
    manager = ModelManager(workers=1, queue_size=1)
    onnx = tmp_path / "en_US-x-low.onnx"
    voice = InstalledModel(
        Kind.VOICE, "en_US-x-low", (onnx, tmp_path / "en_US-x-low.onnx.json"), 10, True, "en_US-x-low"
    )
    usage = ManagerUsage(manager, lambda: {Kind.VOICE: "en_US-x-low"})
    key = f"piper:{onnx.resolve()}"
    try:
        assert not usage.loaded(voice) and usage.release(voice) and usage.is_default(voice)
        holding = asyncio.Event()
        done = asyncio.Event()

        async def hold() -> None:
            async with manager.use(key, lambda: "model"):
                holding.set()
                await done.wait()

        task = asyncio.create_task(hold())
        await holding.wait()
        assert usage.loaded(voice)
        assert not usage.release(voice), "a model held by a request was released"
        done.set()
        await task
        assert usage.release(voice) and not usage.loaded(voice)
    finally:
        await manager.close()


def test_an_entry_without_known_sizes_has_no_size() -> None:
    entry = CatalogEntry(Kind.VOICE, "v", files=(RemoteFile("a", "http://x/a", 3), RemoteFile("b", "http://x/b")))
    assert entry.size is None


# ---- flags -----------------------------------------------------------------------------------------


def test_catalog_flags_and_environment() -> None:
    from wyoming_minerva.catalog import HUGGING_FACE_URL, PIPER_VOICES_URL
    from wyoming_minerva.cli import parse_settings
    from wyoming_minerva.settings import ConfigError

    default = parse_settings([], env={}).catalog
    assert (default.voices_url, default.whisper_hub_url, default.wake_catalog_url) == (
        PIPER_VOICES_URL,
        HUGGING_FACE_URL,
        None,
    )
    env = {"MINERVA_WAKE_CATALOG_URL": "http://mirror.lan/wake.json", "MINERVA_CATALOG_URL": "http://env/v.json"}
    catalog = parse_settings(["--catalog-url", "https://mirror.lan/voices.json"], env=env).catalog
    assert catalog.voices_url == "https://mirror.lan/voices.json"  # the command line wins
    assert catalog.wake_catalog_url == "http://mirror.lan/wake.json"
    assert parse_settings(["--whisper-hub-url", "http://hub.lan"], env={}).catalog.whisper_hub_url == "http://hub.lan"
    for flag in ("--catalog-url", "--whisper-hub-url", "--wake-catalog-url"):
        with pytest.raises(ConfigError, match=flag):
            parse_settings([flag, "file:///etc/passwd"], env={})
