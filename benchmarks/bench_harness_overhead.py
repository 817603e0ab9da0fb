"""Harness overhead: images/s as cadbench measures it vs. a bare hand-written loop doing the same step.

    python benchmarks/bench_harness_overhead.py [--method cad] [--batch-size 2] [--steps 60] [--rounds 5]

Both sides train the same test-scale model on the same batch on the CPU (or CUDA, if present), alternating
rounds so that load from other processes hits both alike. Prints a table and the ratio (target: within 2%).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from cadbench.measure.timing import time_cpu_steps
from cadbench.training.setup import make_training_setup
from cadbench.vocabulary.cell import Cell


def bare_loop_images_per_second(setup, steps: int) -> float:
    """The same step, written out by hand without cadbench's training_step."""
    method, optimizer, images, masks = setup.module, setup.optimizer, setup.batch.images, setup.batch.masks
    sam = method.sam
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        embeddings = method.image_embeddings(images)
        boxes = torch.tensor([[0.0, 0.0, images.shape[-1], images.shape[-2]]]).expand(images.shape[0], 4)
        with torch.no_grad():
            sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
            pe = sam.prompt_encoder.get_dense_pe()
        low = torch.cat([sam.mask_decoder(embeddings[i:i + 1], pe, sparse[i:i + 1], dense[i:i + 1], False)[0]
                         for i in range(images.shape[0])])
        logits = F.interpolate(low, masks.shape[-2:], mode="bilinear", align_corners=False)
        probabilities = torch.sigmoid(logits)
        intersection = (probabilities * masks).sum((1, 2, 3))
        union = (probabilities + masks).sum((1, 2, 3)) - intersection
        loss = F.binary_cross_entropy_with_logits(logits, masks) + (
            1 - (intersection + 1e-3) / (union + 1e-3)).mean()
        loss.backward()
        optimizer.step()
    return images.shape[0] * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="cad")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    setup = make_training_setup(Cell(args.method, "test_scale", args.batch_size))
    for _ in range(5):
        setup.step()
    harness, bare = [], []
    for _ in range(args.rounds):
        times = time_cpu_steps(setup.step, warmup=0, steps=args.steps)
        harness.append(args.batch_size * len(times.seconds) / sum(times.seconds))
        bare.append(bare_loop_images_per_second(setup, args.steps))
    print(f"device: cpu, {torch.get_num_threads()} threads; test-scale {args.method}, batch {args.batch_size}, "
          f"{args.steps} steps x {args.rounds} rounds (measured on CPU)")
    print(f"{'round':>5} {'cadbench img/s':>15} {'bare loop img/s':>16} {'ratio':>7}")
    for index, (h, b) in enumerate(zip(harness, bare), 1):
        print(f"{index:>5} {h:>15.2f} {b:>16.2f} {h / b:>7.3f}")
    # Rounds alternate, so load from other processes hits both sides of a round alike: compare within rounds.
    ratio = statistics.median(h / b for h, b in zip(harness, bare))
    print(f"median per-round ratio cadbench / bare loop: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%; "
          f"target within ±2%)")


if __name__ == "__main__":
    main()
