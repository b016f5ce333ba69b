"""A client for an OpenAI-compatible speech server (another minerva, speaches, LocalAI, OpenAI itself).

Speech-to-text: POST {base}/audio/transcriptions (or /translations) with the audio as a 16 kHz mono WAV,
`response_format=verbose_json` for segments and language, `json` once the upstream refuses verbose_json.
Text-to-speech: POST {base}/audio/speech with `response_format=pcm` (24 kHz s16le mono), streamed as it arrives.
Every failure is an UpstreamError: UpstreamUnavailable for refused, reset, timed out, closed mid-answer, 5xx,
401/403/429 and redirects; UpstreamRejected for a 4xx about the request itself (400, 404, 413, 415, 422).
Nothing here logs the key.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import httpx
import numpy as np

from ..audio import AudioFormat, float_to_pcm16, wav_bytes
from ..stt.engine import Segment, TranscriptionInfo, TranscriptionOptions, Word
from .config import UpstreamSettings
from .errors import UpstreamError, UpstreamRejected, UpstreamUnavailable
from .urls import UpstreamUrl

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SPEECH_FORMAT = AudioFormat(24000, 2, 1)  # OpenAI's `pcm`
MAX_JSON_BYTES = 8 * 1024 * 1024  # a transcription answer (verbose_json of a long file with words)
MAX_ERROR_BYTES = 64 * 1024
# About the request itself (404: a model or voice a client named): never counted against the upstream's health,
# so no client can take an upstream out of rotation; other backends may still take the request.
REJECTING_STATUSES = frozenset({400, 404, 413, 415, 422})
_LANGUAGE_CODE = re.compile(r"^([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]+)?$")


class OpenAIUpstream:
    """Implements TranscribingUpstream and SpeakingUpstream over one httpx.AsyncClient (kept-alive connections)."""

    def __init__(
        self,
        url: UpstreamUrl,
        settings: UpstreamSettings,
        *,
        stt_model: str = "whisper-1",
        tts_model: str = "tts-1",
        default_voice: str = "alloy",
        max_speech_seconds: float = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.label = url.label
        self.stt_model = stt_model
        self.tts_model = tts_model
        self.default_voice = default_voice
        self.probe_timeout = settings.probe_timeout
        self.max_speech_bytes = int(max_speech_seconds * SPEECH_FORMAT.bytes_per_second())
        self._verbose = True  # until the upstream refuses verbose_json
        self._health_path: str | None = None  # the probe path that worked last
        headers = {"Authorization": f"Bearer {url.api_key}"} if url.api_key else {}
        self._http = httpx.AsyncClient(
            base_url=url.base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(settings.timeout, connect=settings.probe_timeout),
            follow_redirects=False,  # a redirect must not carry the key somewhere else
            trust_env=False,  # no proxy variables: upstreams are addressed directly
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"OpenAIUpstream({self.label})"

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- health ------------------------------------------------------------------------------

    async def probe(self) -> None:
        """GET {base}/../health (minerva, speaches); where that does not exist, GET {base}/models."""
        parent = self.url.path.rsplit("/", 1)[0]
        candidates = [self._health_path] if self._health_path else [f"{self.url.origin}{parent}/health", "models"]
        status = 0
        for path in candidates:
            try:
                response = await self._http.get(path, timeout=self.probe_timeout)
            except httpx.HTTPError as err:
                self._raise_transport(err, self.probe_timeout)
            status = response.status_code
            if status < 300:
                self._health_path = path
                return
            if status not in (404, 405):
                break
        self._health_path = None
        raise UpstreamUnavailable(self.label, f"health probe answered HTTP {status}")

    # ---- speech-to-text ----------------------------------------------------------------------

    async def transcribe(
        self, audio: np.ndarray, options: TranscriptionOptions
    ) -> tuple[TranscriptionInfo, list[Segment]]:
        duration = len(audio) / SAMPLE_RATE
        wav = wav_bytes(float_to_pcm16(audio), SAMPLE_RATE)
        if self._verbose:
            try:
                body = await self._post_audio(wav, options, "verbose_json")
                return parse_transcription(body, options, duration, self.label)
            except UpstreamRejected as err:
                _LOGGER.info("Upstream %s refused verbose_json (%s); asking for json from now on", self.label, err)
                self._verbose = False
        body = await self._post_audio(wav, options, "json")
        return parse_transcription(body, options, duration, self.label)

    async def _post_audio(self, wav: bytes, options: TranscriptionOptions, response_format: str) -> dict[str, Any]:
        endpoint = "audio/translations" if options.task == "translate" else "audio/transcriptions"
        form: dict[str, Any] = {"model": self.stt_model, "response_format": response_format}
        if options.language and options.task != "translate":
            form["language"] = options.language
        prompt = " ".join(p for p in (options.initial_prompt, options.hotwords) if p)
        if prompt:
            form["prompt"] = prompt
        if options.temperature is not None:
            form["temperature"] = str(options.temperature)
        if response_format == "verbose_json":
            form["timestamp_granularities[]"] = ["segment", "word"] if options.word_timestamps else ["segment"]
        body, content_type = multipart_body(form, "file", "audio.wav", wav, "audio/wav")
        try:
            async with self._http.stream(
                "POST", endpoint, content=body, headers={"Content-Type": content_type}
            ) as response:
                if response.status_code != 200:
                    raise self._status_error(response.status_code, await _read_capped(response, MAX_ERROR_BYTES))
                raw = await _read_capped(response, MAX_JSON_BYTES)
        except httpx.HTTPError as err:
            self._raise_transport(err, self._http.timeout.read)
        if len(raw) > MAX_JSON_BYTES:
            raise UpstreamUnavailable(self.label, f"answered more than {MAX_JSON_BYTES} bytes")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UpstreamUnavailable(self.label, "answered something that is not JSON") from err
        if not isinstance(body, dict):
            raise UpstreamUnavailable(self.label, "answered JSON that is not an object")
        return body

    # ---- text-to-speech ----------------------------------------------------------------------

    async def synthesize(
        self, text: str, voice: str | None = None, *, speaker: str | None = None, speed: float = 1.0
    ) -> AsyncIterator[tuple[AudioFormat, bytes]]:
        """24 kHz s16le mono pieces as the upstream streams them (`speaker` has no OpenAI equivalent)."""
        payload = {
            "model": self.tts_model,
            "input": text,
            "voice": voice or self.default_voice,
            "response_format": "pcm",
            "speed": speed,
        }
        total = 0
        carry = b""
        try:
            async with self._http.stream("POST", "audio/speech", json=payload) as response:
                if response.status_code != 200:
                    raise self._status_error(response.status_code, await _read_capped(response, MAX_ERROR_BYTES))
                kind = response.headers.get("content-type", "")
                if kind.startswith(("application/json", "text/")):
                    raise UpstreamUnavailable(self.label, f"answered {kind} instead of audio")
                async for chunk in response.aiter_bytes():
                    data = carry + chunk
                    usable = len(data) - len(data) % 2
                    carry = data[usable:]
                    total += usable
                    if total > self.max_speech_bytes:
                        raise UpstreamUnavailable(self.label, "sent more audio than any answer can have")
                    if usable:
                        yield SPEECH_FORMAT, data[:usable]
        except httpx.HTTPError as err:
            self._raise_transport(err, self._http.timeout.read)
        if total == 0:  # not counted against its health: a piece of punctuation may well have no sound
            raise UpstreamRejected(self.label, "answered with no audio")

    # ---- errors ------------------------------------------------------------------------------

    def _status_error(self, status: int, body: bytes) -> UpstreamError:
        message = f"HTTP {status}: {_error_message(body)}"
        if status in REJECTING_STATUSES:
            return UpstreamRejected(self.label, message)
        return UpstreamUnavailable(self.label, message)

    def _raise_transport(self, err: httpx.HTTPError, timeout: float | None) -> NoReturn:
        if isinstance(err, httpx.TimeoutException):
            reason = f"no answer within {timeout or 0:g} s ({type(err).__name__})"
        elif isinstance(err, httpx.ConnectError):
            reason = f"cannot connect ({_first_line(err)})"
        elif isinstance(err, httpx.RemoteProtocolError | httpx.ReadError):
            reason = f"the connection broke mid-answer ({_first_line(err)})"
        else:
            reason = f"{type(err).__name__}: {_first_line(err)}"
        raise UpstreamUnavailable(self.label, reason) from err


def multipart_body(
    fields: dict[str, str | list[str]], file_field: str, filename: str, content: bytes, content_type: str
) -> tuple[bytes, str]:
    """multipart/form-data in one buffer: sent in one write (httpx's streamed encoder costs a write per part).

    Field names are ours; values may hold anything but the random boundary, which no client can know.
    """
    boundary = secrets.token_hex(16)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{item}\r\n'.encode()
        for name, value in fields.items()
        for item in (value if isinstance(value, list) else [value])
    ]
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    )
    parts += [head.encode(), content, f"\r\n--{boundary}--\r\n".encode()]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    """The body, or its first limit+1 bytes (the caller sees it is too long) — never an unbounded read."""
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(parts)[: limit + 1]


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _error_message(body: bytes) -> str:
    """The upstream's own message (OpenAI envelope, FastAPI `detail`, or text), one short line."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return body[:200].decode("utf-8", "replace").strip() or "no message"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:200]
        if isinstance(data.get("detail"), str):
            return str(data["detail"])[:200]
    return json.dumps(data)[:200]


def _number(value: object, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _language(value: object, requested: str | None) -> str:
    """The code we asked for; else the upstream's code ('en', 'en-US' → 'en'); else its name as is ('english')."""
    if requested:
        return requested
    if not isinstance(value, str):
        return ""
    match = _LANGUAGE_CODE.match(value.strip())
    return match.group(1).lower() if match else value.strip().lower()


def parse_transcription(
    body: dict[str, Any], options: TranscriptionOptions, duration: float, label: str
) -> tuple[TranscriptionInfo, list[Segment]]:
    """A json or verbose_json answer → (info, segments); one segment spanning the audio when it has none."""
    text = body.get("text")
    if not isinstance(text, str):
        raise UpstreamUnavailable(label, "answered JSON without a 'text'")
    info = TranscriptionInfo(_language(body.get("language"), options.language), _number(body.get("duration"), duration))
    words = [
        Word(_number(w.get("start")), _number(w.get("end")), str(w.get("word", "")), _number(w.get("probability")))
        for w in body.get("words") or ()
        if isinstance(w, dict)
    ]
    segments = [
        Segment(
            start=_number(s.get("start")),
            end=_number(s.get("end"), info.duration),
            text=str(s.get("text", "")),
            no_speech_prob=_number(s.get("no_speech_prob")),
            avg_logprob=_number(s.get("avg_logprob")),
        )
        for s in body.get("segments") or ()
        if isinstance(s, dict)
    ]
    if not segments:
        segments = [Segment(0.0, info.duration, text)] if text.strip() else []
    return info, _with_words(segments, words)


def _with_words(segments: list[Segment], words: list[Word]) -> list[Segment]:
    """verbose_json lists words apart from segments: each word joins the last segment starting before its middle."""
    if not words or not segments:
        return segments
    starts = [seg.start for seg in segments]
    buckets: list[list[Word]] = [[] for _ in segments]
    for word in words:
        buckets[max(0, bisect.bisect_right(starts, (word.start + word.end) / 2) - 1)].append(word)
    return [
        Segment(seg.start, seg.end, seg.text, tuple(bucket), seg.no_speech_prob, seg.avg_logprob)
        for seg, bucket in zip(segments, buckets, strict=True)
    ]
