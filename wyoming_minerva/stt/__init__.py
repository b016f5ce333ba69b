"""Speech-to-text: the Transcriber seam, the SpeechToText service, endpointing, live sessions."""
