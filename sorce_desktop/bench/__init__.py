"""Benchmarks behind `sorce-desktop bench ...` (registered in cli.BENCHES)."""
