"""Many GPUs on this machine: up to one cell per listed GPU at a time, each in its own fresh process pinned to its
GPU with CUDA_VISIBLE_DEVICES (by UUID where PyTorch gives one, so the pin holds whatever CUDA's device order).

One worker thread per GPU takes the next cell from a shared queue and waits for its process; rows and progress
events travel back through one queue to the main thread, which alone yields them (and so alone writes `--out`): two
cells finishing at once are two queue items, persisted one after the other. A stop in the main thread (Ctrl-C,
SIGTERM, an exception) kills every running cell's process group, waits for the workers to remove their temporary
folders, and goes on up; the killed cells are recorded nowhere.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cadbench.errors import CadbenchError
from cadbench.harness.launchers.base import CellRun, Launcher, Progress, measure_here, set_columns
from cadbench.harness.launchers.config import GpusConfig
from cadbench.harness.launchers.local import run_in_fresh_process
from cadbench.harness.options import RunContext, RunOptions
from cadbench.harness.processes import kill_group
from cadbench.vocabulary.cell import Cell


@dataclass(frozen=True)
class Gpu:
    index: int  # PyTorch's index in this process
    name: str
    pin: str  # the CUDA_VISIBLE_DEVICES value that shows a cell process this GPU alone


def visible_gpus() -> list[Gpu]:
    """The GPUs PyTorch sees in this process."""
    import torch

    if not torch.cuda.is_available():
        return []
    inherited = [part.strip() for part in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]
    gpus = []
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        uuid = str(getattr(properties, "uuid", "") or "")
        if uuid:
            pin = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        else:  # no UUID: the index, through the CUDA_VISIBLE_DEVICES this process was given, if any
            pin = inherited[index] if index < len(inherited) else str(index)
        gpus.append(Gpu(index, properties.name, pin))
    return gpus


class GpusLauncher(Launcher):
    NAME = "gpus"
    config_class = GpusConfig

    def __init__(self, config: GpusConfig) -> None:
        super().__init__(config)
        self.gpus: list[Gpu] | None = None

    def check(self) -> None:
        """Refuse a GPU that does not exist (asking PyTorch, which follows CUDA_VISIBLE_DEVICES)."""
        seen = visible_gpus()
        asked = ",".join(map(str, self.config.gpus)) if self.config.gpus is not None else "all"
        if not seen:
            raise CadbenchError(f"--gpus {asked}: PyTorch sees no CUDA GPU on this machine")
        if self.config.gpus is None:
            self.gpus = seen
            return
        missing = [index for index in self.config.gpus if index >= len(seen)]
        if missing:
            have = f"GPU 0 ({seen[0].name})" if len(seen) == 1 else f"GPUs 0-{len(seen) - 1}"
            raise CadbenchError(f"--gpus names GPU {missing[0]}, which does not exist; PyTorch sees {have}")
        self.gpus = [seen[index] for index in self.config.gpus]

    def launch(self, runs: list[CellRun], options: RunOptions, context: RunContext, environment: dict, out_dir: Path,
               on_progress: Progress) -> Iterator[tuple[Cell, dict]]:
        if self.gpus is None:
            self.check()
        pending: queue.Queue[CellRun] = queue.Queue()
        for run in runs:
            if run.mode != "estimate":
                pending.put(run)
        finished: queue.Queue = queue.Queue()
        stopping = threading.Event()
        running: dict[int, int] = {}  # GPU index -> process group of its cell
        lock = threading.Lock()

        def work(gpu: Gpu) -> None:
            while not stopping.is_set():
                try:
                    run = pending.get_nowait()
                except queue.Empty:
                    return
                finished.put(("start", run.cell, gpu, None))

                def started(group: int) -> None:
                    with lock:
                        running[gpu.index] = group
                    if stopping.is_set():  # the stop came between taking the cell and starting it
                        kill_group(group)

                cell_environment = {**environment, "gpu_name": gpu.name}
                try:
                    row = run_in_fresh_process(run.cell, run.mode, options, context, cell_environment,
                                               extra_env={"CUDA_VISIBLE_DEVICES": gpu.pin}, on_start=started)
                except BaseException as exc:  # noqa: BLE001 — handed to the main thread, which raises it
                    finished.put(("failed", run.cell, gpu, exc))
                    return
                finally:
                    with lock:
                        running.pop(gpu.index, None)
                if stopping.is_set():
                    return  # killed by the stop: nothing half-done is recorded
                finished.put(("row", run.cell, gpu, set_columns(row, gpu_index=gpu.index, gpu_name=gpu.name)))

        workers = [threading.Thread(target=work, args=(gpu,), name=f"cadbench-gpu-{gpu.index}", daemon=True)
                   for gpu in self.gpus]
        try:
            for worker in workers:
                worker.start()
            for run in runs:  # estimates run here, while the GPUs work
                if run.mode == "estimate":
                    on_progress("start", run.cell)
                    yield run.cell, measure_here(run, options, context, environment)
            remaining = sum(run.mode != "estimate" for run in runs)
            while remaining:
                try:
                    kind, cell, gpu, payload = finished.get(timeout=0.5)
                except queue.Empty:
                    if not any(worker.is_alive() for worker in workers) and finished.empty():
                        raise RuntimeError("every GPU worker stopped before all cells were measured")
                    continue
                if kind == "start":
                    on_progress("start", cell, f"GPU {gpu.index}")
                elif kind == "failed":
                    raise payload
                else:
                    remaining -= 1
                    yield cell, payload
        finally:
            stopping.set()
            with lock:
                groups = list(running.values())
            for group in groups:
                kill_group(group)
            for worker in workers:
                if worker.is_alive():
                    worker.join(timeout=60)  # each removes its cell's temporary folder as it ends
