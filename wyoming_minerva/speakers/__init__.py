"""Who is speaking: speaker embeddings, diarization, and enrolled household voices."""
