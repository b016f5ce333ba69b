"""Wake word detection: openWakeWord and microWakeWord engines, worker threads, the WakeWords service."""
