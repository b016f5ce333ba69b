"""HTTP API pieces without a server: name mapping, response formats, upload decoding, speech encoding, the key check."""

from __future__ import annotations

import io
import wave

import pytest
from conftest import Speech, fixture_path
from http_helpers import CONTAINERS, decode, encode, same_length, stereo

from wyoming_minerva.audio import read_wav
from wyoming_minerva.errors import AudioFormatError, AudioTooLongError
from wyoming_minerva.http.codecs import (
    SPEECH_FORMATS,
    EmptyUploadError,
    InvalidAudioError,
    SpeechEncoder,
    decode_upload,
    wav_stream_header,
)
from wyoming_minerva.http.guard import key_matches
from wyoming_minerva.http.names import (
    OPENAI_VOICES,
    UnknownSttModel,
    VoiceChoice,
    choose_voice,
    is_tts_model,
    parse_voice_map,
    split_voice_target,
    stt_program_name,
)
from wyoming_minerva.http.response_formats import as_srt, as_verbose_json, as_vtt, build
from wyoming_minerva.settings import ConfigError
from wyoming_minerva.stt.engine import Segment, Word

# ---- names -----------------------------------------------------------------------------------------


def test_all_thirteen_openai_voices_are_known() -> None:
    assert len(OPENAI_VOICES) == 13 and {"alloy", "marin", "cedar", "verse"} <= set(OPENAI_VOICES)


def test_voice_map_parses_and_rejects_what_is_not_an_openai_voice() -> None:
    assert parse_voice_map(["Nova=en_US-lessac-medium", "alloy=libritts:p3922"]) == (
        ("alloy", "libritts:p3922"),
        ("nova", "en_US-lessac-medium"),
    )
    for bad in ("nova", "nova=", "bob=en_US-lessac-medium"):
        with pytest.raises(ConfigError):
            parse_voice_map([bad])


def test_openai_voice_names_map_to_local_voices_and_speakers() -> None:
    voice_map = (("alloy", "en_US-libritts-high:p3922"), ("nova", "en_US-lessac-medium"))
    assert choose_voice("alloy", voice_map) == VoiceChoice("en_US-libritts-high", "p3922")
    assert choose_voice("NOVA", voice_map) == VoiceChoice("en_US-lessac-medium")
    assert choose_voice("echo", voice_map) == VoiceChoice(None)  # unmapped: the default voice
    assert choose_voice(None, voice_map) == VoiceChoice(None)
    assert choose_voice("en_GB-alan-low", voice_map) == VoiceChoice("en_GB-alan-low")  # a local name as is
    assert split_voice_target("/voices/x.onnx") == VoiceChoice("/voices/x.onnx")


def test_model_names() -> None:
    programs = ["tiny.en", "base"]
    for hosted in ("whisper-1", "gpt-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-diarize", "nova-3"):
        assert stt_program_name(hosted, programs) is None  # the router picks by language
    assert stt_program_name("TINY.EN", programs) == "tiny.en" and stt_program_name("base", programs) == "base"
    assert stt_program_name(None, programs) is None and stt_program_name(" ", programs) is None
    for missing in ("small-int8", "large-v3", "Systran/faster-whisper-small", "distil-large-v3"):
        with pytest.raises(UnknownSttModel):
            stt_program_name(missing, programs)
    assert is_tts_model("tts-1-hd") and is_tts_model("gpt-tts") and is_tts_model("kokoro")
    assert not is_tts_model("  ")


# ---- transcript formats ------------------------------------------------------------------------------


def _segments() -> list[Segment]:
    return [
        Segment(0.0, 1.5, " Turn on the lamp.", words=(Word(0.0, 0.4, " Turn"), Word(0.4, 0.6, " on"))),
        Segment(61.25, 3725.5, " Thanks.", no_speech_prob=0.1),
    ]


def test_srt_and_vtt_timestamps() -> None:
    transcript = build(_segments(), "en", 3726.0, heard_speech=True)
    assert as_srt(transcript) == (
        "1\n00:00:00,000 --> 00:00:01,500\nTurn on the lamp.\n\n2\n00:01:01,250 --> 01:02:05,500\nThanks.\n"
    )
    assert as_vtt(transcript).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nTurn on the lamp.\n\n00:01:01.250")


def test_verbose_json_has_segments_and_words_when_asked() -> None:
    transcript = build(_segments(), "en", 3726.0, heard_speech=True, temperature=0.2)
    both = as_verbose_json(transcript, ("word", "segment"))
    assert (
        both["text"] == "Turn on the lamp. Thanks." and both["language"] == "english" and both["task"] == "transcribe"
    )
    assert [s["id"] for s in both["segments"]] == [0, 1] and both["segments"][1]["seek"] == 6125
    assert both["words"] == [{"word": "Turn", "start": 0.0, "end": 0.4}, {"word": "on", "start": 0.4, "end": 0.6}]
    assert both["usage"] == {"type": "duration", "seconds": 3726.0}
    assert "words" not in as_verbose_json(transcript)
    assert "segments" not in as_verbose_json(transcript, ("word",))


def test_hallucinations_are_dropped_like_on_the_wyoming_side() -> None:
    credits = [Segment(0, 2, " Turn it off."), Segment(2, 4, " Thanks for watching!")]
    assert build(credits, "en", 4, heard_speech=True).text == "Turn it off."
    silence = [Segment(0, 2, " you")]
    assert build(silence, "en", 2, heard_speech=False).text == ""
    assert build(silence, "en", 2, heard_speech=False).segments == ()
    assert build(silence, "en", 2, heard_speech=True).text == "you"


# ---- uploads ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("container", "codec", "rate", "name"), CONTAINERS)
def test_every_upload_container_decodes_to_16k_mono(
    speech: Speech, container: str, codec: str, rate: int, name: str
) -> None:
    pcm = speech.say("Turn off the kitchen lights.")
    if container in ("mp3", "ipod"):  # stereo uploads are mixed down
        data = encode(stereo(pcm), speech.rate, container, codec, rate, channels=2)
    else:
        data = encode(pcm, speech.rate, container, codec, rate)
    decoded = decode_upload(data, max_seconds=60)
    assert decoded.seconds == pytest.approx(len(pcm) / 2 / speech.rate, abs=0.1), name
    assert decoded.samples.dtype.name == "float32" and decoded.heard_speech


def test_fixture_recording_decodes_with_its_real_length() -> None:
    data = fixture_path("asr/turn_on_the_living_room_lamp.wav").read_bytes()  # 44.1 kHz stereo
    pcm, fmt = read_wav(data)
    decoded = decode_upload(data, max_seconds=60)
    assert decoded.seconds == pytest.approx(len(pcm) / fmt.width / fmt.channels / fmt.rate, abs=0.01)


def test_silence_is_not_speech(speech: Speech) -> None:
    data = encode(speech.silence(2.0), speech.rate, "wav", "pcm_s16le", 16000)
    assert not decode_upload(data, max_seconds=60).heard_speech


def test_bad_uploads_are_named_for_what_they_are(speech: Speech) -> None:
    with pytest.raises(EmptyUploadError):
        decode_upload(b"", 60)
    with pytest.raises(AudioFormatError):
        decode_upload(b"this is a text file, not audio\n" * 50, 60)
    with pytest.raises(AudioFormatError):  # raw PCM has no container to recognise
        decode_upload(speech.say("Hello."), 60)
    with pytest.raises(AudioFormatError):  # a playlist would make FFmpeg open other files
        decode_upload(b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n", 60)
    with pytest.raises(AudioFormatError):
        decode_upload(b"ffconcat version 1.0\nfile /etc/passwd\n", 60)
    header_only = wav_stream_header(16000).replace(b"\xff\xff\xff\xff", b"\x00\x00\x00\x00")
    with pytest.raises(InvalidAudioError):
        decode_upload(header_only, 60)


def test_duration_cap_stops_decoding(speech: Speech) -> None:
    data = encode(speech.say("Turn off the kitchen lights, please."), speech.rate, "flac", "flac", 44100)
    with pytest.raises(AudioTooLongError):
        decode_upload(data, max_seconds=1.0)


# ---- speech output ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(SPEECH_FORMATS))
def test_speech_encoder_output_decodes_back(speech: Speech, fmt: str) -> None:
    from wyoming_minerva.audio import AudioFormat, convert_pcm

    pcm = convert_pcm(speech.say("The lights are on. The door is locked."), AudioFormat(speech.rate), 24000)
    half = len(pcm) // 4 * 2
    encoder = SpeechEncoder(fmt, 24000)
    data = encoder.encode(pcm[:half]) + encoder.encode(pcm[half:]) + encoder.finish()
    seconds = len(pcm) / 2 / 24000
    if fmt == "pcm":
        assert data == pcm
        return
    decoded = decode(data)
    assert same_length(fmt, decoded.seconds, seconds), (fmt, decoded.seconds, seconds)
    assert decoded.rate == (48000 if fmt == "opus" else 24000)  # Opus always decodes at 48 kHz
    assert decoded.peak > 0.1
    if fmt == "wav":
        with wave.open(io.BytesIO(data)) as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24000, 1, 2)


def test_closing_an_encoder_early_is_safe() -> None:
    encoder = SpeechEncoder("mp3", 24000)
    encoder.encode(bytes(4800))
    encoder.close()
    encoder.close()


# ---- API key -----------------------------------------------------------------------------------------


def test_api_key_from_bearer_or_x_api_key() -> None:
    def scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
        return {"headers": list(headers)}

    assert key_matches(scope((b"authorization", b"Bearer s3cret")), "s3cret")
    assert key_matches(scope((b"authorization", b"bearer s3cret")), "s3cret")
    assert key_matches(scope((b"x-api-key", b"s3cret")), "s3cret")
    assert not key_matches(scope((b"authorization", b"Bearer s3cre")), "s3cret")
    assert not key_matches(scope((b"authorization", b"Basic s3cret")), "s3cret")
    assert not key_matches(scope(), "s3cret")
    offered = (b"sec-websocket-protocol", b"realtime, openai-insecure-api-key.s3cret")
    assert key_matches({"type": "websocket", "headers": [offered]}, "s3cret")
    assert not key_matches({"type": "http", "headers": [offered]}, "s3cret")  # only on WebSocket handshakes


# ---- flags -----------------------------------------------------------------------------------------


def test_http_flags_and_environment() -> None:
    from wyoming_minerva.cli import parse_settings

    default = parse_settings([], env={}).http
    assert default is not None and (default.host, default.port) == ("0.0.0.0", 10800)
    assert parse_settings(["--asr-uri", "tcp://127.0.0.1:10300"], env={}).http is None  # a service flag: off
    assert parse_settings(["--asr-uri", "tcp://127.0.0.1:10300", "--http", "off"], env={}).http is None
    http = parse_settings(
        ["--http", "[::1]:8080", "--http-max-concurrency", "3", "--http-max-audio-seconds", "30"],
        env={"MINERVA_OPENAI_VOICE": "nova=en_US-lessac-medium,alloy=en_US-libritts-high:p1", "MINERVA_API_KEY": "k"},
    ).http
    assert http is not None and (http.host, http.port, http.api_key) == ("::1", 8080, "k")
    assert (http.max_concurrency, http.max_audio_seconds) == (3, 30.0)
    assert http.voice_map == (("alloy", "en_US-libritts-high:p1"), ("nova", "en_US-lessac-medium"))
    for bad in (["--http-max-concurrency", "-1"], ["--max-upload-mb", "0"], ["--openai-voice", "bob=x"]):
        with pytest.raises(ConfigError):
            parse_settings(["--http", "127.0.0.1:0", *bad], env={})
