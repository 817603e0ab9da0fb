"""The version of cadbench, on the bottom floor so that any module may record it without importing the package's API."""

__version__ = "0.1.0"
