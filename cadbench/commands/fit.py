"""`cadbench fit`: per method, backbone and card, the largest batch with no levers and the cheapest memory levers
that reach a target effective batch (cadbench.estimator.advisor)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from cadbench.cards import DEFAULT_GPU_MEMORY
from cadbench.commands.arguments import (add_alloc_conf, add_cell_selection, add_image_size, add_precision,
                                         add_prompts_per_image, comma_list, memory_size)
from cadbench.errors import CadbenchError
from cadbench.harness.processes import default_jobs
from cadbench.vocabulary.precision import PRECISIONS

DEFAULT_MAX_BATCH = 64
DEFAULT_TARGET_BATCH = 4  # the advisor's (cadbench.estimator.advisor), kept here so --help imports no torch


def register(commands) -> None:
    parser = commands.add_parser("fit", help="largest batch per method, backbone and GPU, and the cheapest memory "
                                             "levers that reach a target batch")
    parser.add_argument("--gpu-memory", default=DEFAULT_GPU_MEMORY,
                        help=f"comma-separated capacities, e.g. 24GB,40GB,80GiB (default: {DEFAULT_GPU_MEMORY})")
    parser.add_argument("--target-batch", type=int, default=None,
                        help=f"also name the cheapest memory levers that reach this effective batch (e.g. "
                             f"{DEFAULT_TARGET_BATCH}); each method x backbone then replays every lever combination, "
                             f"minutes per pair on a CPU")
    add_cell_selection(parser)
    add_precision(parser, default=list(PRECISIONS), help=" the levers may use")
    add_image_size(parser, help="; the task's resolution, a lever only where several are listed: each answer is then "
                                "the largest size at which the target batch fits")
    add_prompts_per_image(parser)  # a task choice, never a lever: each value listed is advised on its own
    parser.add_argument("--cuda-context", type=memory_size, default=None,
                        help="memory the CUDA context takes outside PyTorch's allocator (default: the estimator's "
                             "stated figure)")
    add_alloc_conf(parser)
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help=f"largest batch size searched (default: {DEFAULT_MAX_BATCH})")
    parser.add_argument("--jobs", type=int, default=None,
                        help="processes searching method x backbone pairs at once (default: one per CPU core, at "
                             "most one per 1.5 GB of available memory)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-progress", action="store_true", help="no progress display on stderr")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cadbench.commands.listing import resolve_backbones, resolve_methods
    from cadbench.estimator import DEFAULT_CUDA_CONTEXT_BYTES, AllocatorConfig
    from cadbench.estimator.advisor import advise, not_defined
    from cadbench.estimator.alloc_conf import resolve
    from cadbench.vocabulary.cell import Cell
    from cadbench.vocabulary.method_spec import split_method_spec

    try:
        names = comma_list(args.gpu_memory)
        capacities = [memory_size(item) for item in names]
    except argparse.ArgumentTypeError as exc:
        raise CadbenchError(f"--gpu-memory: {exc}") from None
    if args.max_batch < 1:
        raise CadbenchError(f"--max-batch must be at least 1, got {args.max_batch}")
    if args.target_batch is not None and not 1 <= args.target_batch <= args.max_batch:
        raise CadbenchError(f"--target-batch must be between 1 and --max-batch ({args.max_batch}), got "
                            f"{args.target_batch}")
    if args.jobs is not None and args.jobs < 1:
        raise CadbenchError(f"--jobs must be at least 1, got {args.jobs}")
    for precision in args.precision:
        Cell("decoder_only", "test_scale", 1, precision)  # refuses an unknown precision in one line
    context = DEFAULT_CUDA_CONTEXT_BYTES if args.cuda_context is None else args.cuda_context
    alloc_conf = AllocatorConfig.parse(resolve(getattr(args, "alloc_conf", None)))
    if not alloc_conf.simulated:
        raise CadbenchError(f"cannot tell what fits with allocator setting {', '.join(alloc_conf.not_simulated)}: "
                            f"the caching-allocator simulation does not model it")
    specs = [split_method_spec(spec) for spec in resolve_methods(args.methods)]
    backbones = resolve_backbones(args.backbone)
    undefined = 0
    for backbone in backbones:
        for name, options in specs:
            reason = not_defined(Cell(name, backbone, 1, method_options=options))
            if reason:
                undefined += 1
                print(f"cadbench: note: no advice for {name} on {backbone}: it is not defined there ({reason})",
                      file=sys.stderr)
    if undefined == len(specs) * len(backbones):
        raise CadbenchError(f"nothing to advise: no method of --methods ({', '.join(name for name, _ in specs)}) is "
                            f"defined on --backbone ({', '.join(backbones)})")
    pairs = ((len(specs) * len(backbones) - undefined) * len(args.image_size or [None])
             * len(args.prompts_per_image))
    with _progress(pairs, enabled=not args.no_progress) as step:
        advice = advise(specs, backbones, capacities, args.target_batch, context, args.max_batch, alloc_conf,
                        precisions=args.precision, on_progress=step, workers=args.jobs or default_jobs(),
                        image_sizes=args.image_size, prompts_per_image=args.prompts_per_image)
    if args.json:
        print(json.dumps([answer.as_dict() for answer in advice], indent=2))
        return 0
    print(format_advice(advice, dict(zip(capacities, names)), args.max_batch, alloc_conf.label, context))
    return 0


def format_advice(advice: list, capacity_names: dict[int, str], max_batch: int, alloc_label: str,
                  context: int) -> str:
    """Two tables: the largest batch with no levers (method x backbone by card), then per card the cheapest levers
    that reach the target batch, with the card needed (OOM line), the peak and the FLOPs ratio."""
    import pandas as pd

    from cadbench.backbones import get_backbone
    from cadbench.registry import get_method
    from cadbench.vocabulary.method_spec import method_label
    from cadbench.vocabulary.prompts import describe_prompts

    def largest(batch: int) -> str:
        return "none" if batch == 0 else f"{batch}+" if batch >= max_batch else str(batch)

    target = advice[0].target_batch if advice else None
    # the pixels are shown where they say something: several sizes, or one that is not the backbone's native size
    show_px = len({answer.image_px for answer in advice}) > 1 or any(
        answer.image_px != get_backbone(answer.backbone).image_size for answer in advice)
    resolution_lever = any(answer.resolution_lever for answer in advice)
    rows = []
    for answer in advice:
        prompts = describe_prompts(answer.prompts_per_image)
        inference = "" if get_method(answer.method).trains else " (inference)"  # zero_shot: what inference needs
        rows.append({"method": method_label(answer.method, answer.method_options) + inference,
                     "backbone": answer.backbone + (f", {prompts}" if prompts else ""),
                     "px": answer.image_px,
                     "GPU": capacity_names.get(answer.capacity_bytes, f"{answer.capacity_bytes / 1e9:g}GB"),
                     "plain": largest(answer.largest_plain_batch),
                     "levers": answer.answer,
                     "card needed": "—" if answer.needed_bytes is None else f"{answer.needed_bytes / 1e9:.2f} GB",
                     "peak": "—" if answer.peak_bytes is None else f"{answer.peak_bytes / 1e9:.2f} GB",
                     "FLOPs": "—" if answer.flops_ratio is None else f"{answer.flops_ratio:.2f}×",
                     "chosen": answer.chosen is not False})
    table = pd.DataFrame(rows)
    cards = list(dict.fromkeys(table["GPU"])) if rows else []
    index = ["method", "backbone", "px"] if show_px else ["method", "backbone"]
    plain = table.pivot_table(index=index, columns="GPU", values="plain", aggfunc="first",
                              sort=False)[cards] if rows else table
    lever_answer = f"{'largest size and cheapest' if resolution_lever else 'cheapest'} levers for batch {target}"
    levers = table[table["chosen"]] if rows else table
    levers = levers.rename(columns={"levers": lever_answer}).drop(columns=["plain", "chosen"])
    if rows and (resolution_lever or not show_px):
        levers = levers.drop(columns="px")  # the native size, or the answer names its own
    heading = (f"Largest batch with no levers (fp32; estimated: simulated caching-allocator OOM line, allocator "
               f"settings {alloc_label}, + {context / 1e9:.2f} GB CUDA context; searched up to {max_batch}, each "
               f"answer B replayed at B and B+1):")
    if target is None:
        return "\n".join([heading, plain.to_string(), "",
                          "Add --target-batch B for the cheapest memory levers (precision, activation checkpointing, "
                          "bf16 frozen weights, micro-batches, lean encoder) that reach an effective batch B."])
    return "\n".join([
        heading,
        plain.to_string(),
        "",
        ("The largest listed image size, then " if resolution_lever else "")
        + f"{'c' if resolution_lever else 'C'}heapest levers that reach an effective batch of {target} (least extra "
        f"FLOPs, then least numerical change, then fewest micro-batches; each answer replayed at batch {target}; card "
        f"needed = OOM line + context):",
        levers.to_string(index=False),
    ])


class _progress:
    """Progress over method x backbone searches on stderr: a rich bar on a terminal, plain lines otherwise; both
    with the time left, from the pace of the searches since the first call (the imports before it are not a
    search's; searches of larger models take longer, so it is an estimate: 'about')."""

    def __init__(self, total: int, enabled: bool, clock=time.monotonic) -> None:
        self.total, self.enabled, self.calls = total, enabled, 0
        self.clock = clock
        self.first: tuple[float, int] | None = None  # the time of the first call, and the searches finished then
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=Console(file=sys.stderr), transient=True)
            self.task = self.bar.add_task("fit", total=total)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self.step

    def step(self, label: str, finished: int) -> None:
        """A search starts (one process) or has finished (several); `finished` searches are done."""
        eta = self.eta(finished)
        if self.bar is not None:
            self.bar.update(self.task, completed=finished, description=label + (f" · {eta}" if eta else ""))
        elif self.enabled:
            print(f"fit [{self.calls + 1}/{self.total}] {label}" + (f"; {eta}" if eta else ""), file=sys.stderr,
                  flush=True)
        self.calls += 1

    def eta(self, finished: int) -> str:
        """'ETA about 2 min 10 s' once a search has finished since the first call and while some are left, else ''."""
        from cadbench.harness.progress import duration_text

        now = self.clock()
        if self.first is None:
            self.first = (now, finished)
        since, finished_then = self.first
        if finished <= finished_then or finished >= self.total:
            return ""
        pace = (now - since) / (finished - finished_then)
        return f"ETA about {duration_text(pace * (self.total - finished))}"

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=self.total)
            self.bar.stop()
