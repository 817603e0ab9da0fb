"""cadbench: benchmark and memory-profile fine-tuning methods for Meta's Segment Anything."""

__version__ = "0.1.0"
