"""wyoming-minerva: local wake word, speech-to-text and text-to-speech in one server."""

__version__ = "0.1.0"
