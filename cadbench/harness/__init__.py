"""The harness: which cells to measure, measuring one, sweeping them all, and keeping every row.

    expand_grid, make_cell, cell_label              the user's names made cells, crossed into the grid (grid)
    RunOptions, RunContext                          what the user chose (every run default); what the run resolved
    measure_cell(cell, mode, options, environment)  one cell's result row, in this process (measure_cell)
    sweep(cells, mode_of, options, store, ...)      every unfinished cell, each row persisted as it ends (runner)
    contract_columns                                the row contract (results.rows)
    ResultStore                                     the result folder: lock, journal first, derived files, resume
                                                    (results.store)
    load_results, read_results_document             the one reader of result sets (results.documents)
    null_reasons                                    why a column is null (nulls)
    collect_environment                             versions, commit, GPU and driver (environment)

The cell itself, its modes and levers are the vocabulary's (`cadbench.vocabulary`); `cadbench validate` drives a
whole run, so it sits beside the API (`cadbench.validation`).
"""

from cadbench._lazy import lazy_exports

_EXPORTS = {
    "expand_grid": "grid", "make_cell": "grid", "cell_label": "grid", "RunOptions": "options", "RunContext": "options",
    "measure_cell": "measure_cell", "sweep": "runner", "SweepOutcome": "runner",
    "ResultStore": "results.store", "load_results": "results.documents", "contract_columns": "results.rows",
    "read_results_document": "results.documents",
    "null_reasons": "nulls", "collect_environment": "environment",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
