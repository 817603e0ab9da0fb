"""cadbench: benchmark and memory-profile fine-tuning methods for Meta's Segment Anything.

`cadbench.run(...)` sweeps a grid and returns a pandas DataFrame; `cadbench.load_results(path)` reads one back.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_results", "run"]


def __getattr__(name: str):
    # Lazy, so that `import cadbench` (and the cell subprocesses' start-up) does not import the whole harness.
    if name == "run":
        from cadbench.api import run

        return run
    if name == "load_results":
        from cadbench.results import load_results

        return load_results
    raise AttributeError(f"module 'cadbench' has no attribute {name!r}")
