"""Installs the fake CUDA layer in every Python process started with this folder on PYTHONPATH and
CADBENCH_FAKE_CUDA naming a config (see cadbench_fakecuda.py): the sweep's parent and each fresh cell process."""

import os

if os.environ.get("CADBENCH_FAKE_CUDA"):
    import cadbench_fakecuda

    cadbench_fakecuda.install_from_environment()
