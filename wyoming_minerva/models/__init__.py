"""Engines: model loading and inference. No protocol code in here."""
