"""What users read: the self-contained HTML report, the terminal table, per-cell comparison and the memory gate.

    build_report(folders, out_file=None, ...) -> Path     jinja2 (autoescaped) + inline SVG charts + CSS (html)
    comparison_table(rows, baseline)                      the table printed after a sweep (terminal)
    compare_results(first, second)                        per-cell differences, `cadbench compare` (compare)
    compare(results, baseline, tolerance)                 the CI memory gate, `cadbench check` (check)
"""

from cadbench._lazy import lazy_exports

_EXPORTS = {"build_report": "html", "comparison_table": "terminal", "compare_results": "compare",
            "compare": "check"}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
