"""The words every layer of cadbench shares, on a floor of their own: nothing here imports anything above it.

    cell         Cell: one point of the grid (method spec, backbone, batch size, precision, levers) and its key
    precision    Precision: the dtype the step computes in
    modes        Mode (how a cell is measured) and Device (what the user asks for)
    outcomes     Status (how a cell ended), MemorySource and ThroughputSource (where a row's figures came from),
                 RowPart (what a producer of a row's columns gives)
    method_spec  the text form of a method spec, 'lora:rank=16', and of a list of them

Layers, bottom up: this vocabulary -> methods -> training -> estimator / measure -> harness -> report -> api ->
commands -> cli. An import goes down, never up (tests/test_import_graph.py keeps it so).
"""
