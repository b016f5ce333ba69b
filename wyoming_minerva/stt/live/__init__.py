"""Live speech-to-text sessions (WebSocket front ends) on the shared SpeechToText service."""
