"""Self-contained HTML reports: jinja2 (autoescaped) + inline SVG charts from matplotlib + inline CSS."""

from cadbench.report.html import build_report

__all__ = ["build_report"]
