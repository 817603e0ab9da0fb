"""The harness: which cells to measure, measuring one, sweeping them all, and keeping every row.

    Cell, expand_grid, cell_key                     the grid and the one definition of a cell's identity (grid)
    RunOptions, Mode, Device                        everything a run is asked to do, with its defaults (options)
    measure_cell(cell, mode, options, environment)  one cell's result row, in this process (measure_cell)
    sweep(cells, mode_of, options, store, ...)      every unfinished cell, each row persisted as it ends (runner)
    ResultStore, load_results, CONTRACT_COLUMNS     the result folder: lock, journal first, derived files, resume;
    read_results_document                           the row contract; the one reader of result sets (results)
    null_reasons                                    why a column is null (nulls)
    collect_environment                             versions, commit, GPU and driver (environment)
    validate                                        the estimator against CUDA, cell by cell (validate)
"""

from cadbench._lazy import lazy_exports

_EXPORTS = {
    "Cell": "grid", "expand_grid": "grid", "cell_key": "grid",
    "RunOptions": "options", "Mode": "options", "Device": "options",
    "measure_cell": "measure_cell", "sweep": "runner", "SweepOutcome": "runner",
    "ResultStore": "results", "load_results": "results", "CONTRACT_COLUMNS": "results",
    "read_results_document": "results",
    "null_reasons": "nulls", "collect_environment": "environment", "validate": "validate",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
