"""The results of a run: the row schema, the folder that keeps the rows, and the one reader of result documents.

    rows       the row schema: contract_columns, new_row, set_outcome, explain_nulls, unexplained_nulls,
               finite_row, row_problem, rows_to_frame (its words, Status and MemorySource, are the vocabulary's:
               cadbench.vocabulary.outcomes)
    store      ResultStore: the --out folder (lock, journal first, derived files, resume)
    documents  read_results_document, load_results: a result set read back; the settings run.json holds
"""

from cadbench._lazy import lazy_exports

_EXPORTS = {
    "contract_columns": "rows", "new_row": "rows", "set_outcome": "rows", "explain_nulls": "rows",
    "unexplained_nulls": "rows", "finite_row": "rows", "rows_to_frame": "rows",
    "ResultStore": "store",
    "read_results_document": "documents", "load_results": "documents", "SCHEMA_VERSION": "documents",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
