"""Measurements on real devices: CUDA memory, NVML, step timing."""
