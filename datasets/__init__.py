"""Dataset adapters and the synthetic camouflage generator (installed as `cadbench.datasets`).

Empty until the quality issue lands: no dataset code exists yet, and nothing in cadbench pretends otherwise.
"""
