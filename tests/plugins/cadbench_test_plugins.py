"""Methods that misbehave on purpose, installed for the harness tests through the `cadbench.methods` entry point."""

import os
import time

import torch

from cadbench.methods import DecoderOnly


class Raising(DecoderOnly):
    name = "raising"
    summary = "raises in its forward pass"

    def image_embeddings(self, images):
        raise RuntimeError("deliberate failure in the forward pass\nsecond line that must not be shown")


class OutOfMemory(DecoderOnly):
    name = "oom"
    summary = "runs out of (simulated) CUDA memory"

    def image_embeddings(self, images):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")


class Crashing(DecoderOnly):
    name = "crashing"
    summary = "kills its process"

    def image_embeddings(self, images):
        os._exit(3)


class Slow(DecoderOnly):
    name = "slow"
    summary = "sleeps while being built, long enough to be killed (unless CADBENCH_TEST_SLOW=0)"

    def __init__(self, sam):
        super().__init__(sam)
        if os.environ.get("CADBENCH_TEST_SLOW", "1") != "0":
            time.sleep(120)


class UnmodelledCuda(DecoderOnly):
    name = "unmodelled_cuda"
    summary = "asks CUDA for a figure the fake CUDA layer (tests/fakecuda) does not model, which must fail loudly"

    def image_embeddings(self, images):
        torch.cuda.memory_allocated()
        return super().image_embeddings(images)


_met_once = False


class Rendezvous(DecoderOnly):
    name = "rendezvous"
    summary = ("at its first forward pass in a process, records CUDA_VISIBLE_DEVICES and waits (up to 60 s) until "
               "CADBENCH_TEST_RENDEZVOUS_N cells have reached that point (files in CADBENCH_TEST_RENDEZVOUS)")

    def image_embeddings(self, images):
        global _met_once
        folder = os.environ.get("CADBENCH_TEST_RENDEZVOUS")
        if folder and not _met_once:
            _met_once = True
            import json
            from pathlib import Path

            folder = Path(folder)
            start = time.time()
            (folder / f"{os.getpid()}.start").write_text("")
            wanted = int(os.environ.get("CADBENCH_TEST_RENDEZVOUS_N", "2"))
            while len(list(folder.glob("*.start"))) < wanted and time.time() - start < 60:
                time.sleep(0.05)
            met = len(list(folder.glob("*.start"))) >= wanted
            time.sleep(0.3)
            (folder / f"{os.getpid()}.json").write_text(json.dumps({
                "batch_size": int(images.shape[0]), "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "start": start, "end": time.time(), "met": met}))
        return super().image_embeddings(images)
