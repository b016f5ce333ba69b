"""The MinervaError hierarchy: every error a client may see has a stable code."""

from __future__ import annotations


class MinervaError(Exception):
    """Base of every error we raise on purpose; `code` goes on the wire."""

    code = "internal_error"


class BadRequestError(MinervaError):
    """The client sent something we cannot accept."""

    code = "bad_request"


class ProtocolError(BadRequestError):
    """A Wyoming event that is malformed or breaks a size limit."""

    code = "protocol_error"


class AudioFormatError(BadRequestError):
    """Audio in a format we cannot convert (e.g. an unsupported sample width)."""

    code = "unsupported_audio"


class AudioTooLongError(BadRequestError):
    """More audio than the configured maximum for one request."""

    code = "audio_too_long"


class ModelNotFoundError(MinervaError):
    """A model, voice or wake word that is neither local nor downloadable."""

    code = "model_not_found"


class ModelLoadError(MinervaError):
    """A model exists but failed to load."""

    code = "model_load_failed"


class QueueFullError(MinervaError):
    """The bounded inference queue is full: try again later."""

    code = "queue_full"


class InferenceError(MinervaError):
    """A model failed while running."""

    code = "inference_failed"


class ServerBusyError(MinervaError):
    """A server-wide limit is reached (connections, buffered audio): try again later."""

    code = "server_busy"
