"""Latency lookup tables: schema, profiler, predictor, hardware fingerprint (layer 2)."""
