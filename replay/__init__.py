"""Benchmarks as streams: PaSBench scenarios through the live pipeline, and scoring."""
