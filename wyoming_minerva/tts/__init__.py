"""Text-to-speech: the Synthesizer seam, the TextToSpeech service, sentence splitting, Piper."""
