"""The fit advisor: per method, backbone and GPU card, the largest batch with no levers, and the cheapest lever
combination that reaches a target effective batch.

"Cheapest" is the order of `cadbench.estimator.cheapest` (least extra compute, then least numerical change, then
least serialisation). Only the levers that change which ops run change the FLOPs (activation checkpointing re-runs
the encoder's forward; the lean encoder runs the same attention fused); precision, frozen-weight dtype and
micro-batching run the same ops (micro-batches: the same ops on fewer images at a time), so candidates are ranked by
the measured ratio of their structure (checkpointing and lean encoder alone, in fp32), and each answer shows its own
measured ratio. No lever lowers the FLOPs (checkpointing adds a forward pass, the lean encoder's ratio is 1; a test
checks each structure on SAM's and on SAM 2's test scale, with other methods on each), so nothing is
cheaper than the plain step: where it fits a card, it is that card's answer, and the structures are replayed only
once a card needs more (a ranking costs one replay per structure).

Every candidate reported as the answer was replayed exactly at the target batch (the cell's effective batch, its
micro-batches as set) and fits the card. To keep the search short, a candidate is skipped for a card when one
already replayed with the same precision and every other lever at least as strong (checkpointing or lean encoder
on, frozen weights in bf16, micro-batches no larger) did not fit it: each of those levers only ever removes memory
from the step (an assumption, not a proof; precision is left out of it, since bf16 autocast can need more memory
than fp32). So the strongest combination of each precision is replayed before the first other combination of that
precision (the plain step itself is tried first, with nothing before it). The rule never makes an answer that was
not replayed; it can only make a "nothing fits" or the skipping of a cheaper combination rest on it, which the
answer's `pruned` count says.

The input resolution changes the task, so it is no lever unless the user lists several sizes (`image_sizes`): then
each size is searched as above, and each method x backbone x card is answered at the largest size at which the
target batch fits (with that size's cheapest levers): any lever that keeps the task comes before a smaller image.
Without a target batch, each size gets its own largest plain batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from itertools import product
from typing import Callable, Iterable

from cadbench.backbones import cell_pixels, get_backbone
from cadbench.estimator.alloc_conf import AllocatorConfig
from cadbench.estimator.cells import estimate_cell
from cadbench.estimator.cheapest import cheapness, describe_levers
from cadbench.estimator.cuda_runtime import DEFAULT_CUDA_CONTEXT_BYTES
from cadbench.estimator.estimate import MemoryEstimate
from cadbench.estimator.fit import DEFAULT_MAX_BATCH, largest_fitting_batches
from cadbench.training.levers import not_applicable
from cadbench.vocabulary.cell import Cell
from cadbench.vocabulary.prompts import describe_prompts
from cadbench.vocabulary.levers import declared_levers, lever_named
from cadbench.vocabulary.precision import PRECISIONS

DEFAULT_TARGET_BATCH = 4


@dataclass(frozen=True)
class Advice:
    """One method x backbone x card answer."""

    method: str
    method_options: str
    backbone: str
    capacity_bytes: int
    cuda_context_bytes: int
    largest_plain_batch: int  # the plain step (fp32, no levers); 0: not even batch 1 fits
    target_batch: int | None  # None: no lever advice was asked for (only the largest plain batch)
    cell: Cell | None  # the cheapest combination at the target batch; None: nothing fits (or none asked for)
    needed_bytes: int | None  # its OOM line (card needed), context included
    peak_bytes: int | None  # its estimated max_memory_allocated
    flops_ratio: float | None  # its FLOPs against the plain step at the target batch
    candidates: int  # lever combinations that apply to the method
    replayed: int  # of those, replayed at the target batch for this card's answer
    pruned: int  # skipped because a stronger one with the same precision did not fit
    image_px: int = 0  # the input side of the answer, in pixels
    sizes_tried: tuple[int, ...] = ()  # where resolution was a lever: every size searched (pixels, largest first)
    chosen: bool | None = None  # where resolution was a lever: whether this size's answer is the one given
    prompts_per_image: str | int = "image"  # the task advised on (cadbench.vocabulary.prompts), never a lever

    @property
    def resolution_lever(self) -> bool:
        """Whether the answer was chosen among several input sizes (and must name the one it chose)."""
        return len(self.sizes_tried) > 1

    @property
    def answer(self) -> str:
        """For people: 'fits at 512 px, batch 4: bf16' where resolution was a lever, else the levers alone."""
        if not self.resolution_lever or self.target_batch is None:
            return self.levers if self.cell is not None else "nothing fits"
        if self.cell is None:
            sizes = [str(size) for size in (self.sizes_tried if self.chosen else (self.image_px,))]
            return f"nothing fits at {' or '.join(filter(None, [', '.join(sizes[:-1]), sizes[-1]]))} px"
        return f"fits at {self.image_px} px, batch {self.target_batch}: {self.levers}"

    @property
    def levers(self) -> str:
        """'bf16, checkpointed encoder, micro-batch 2'; 'none' for the plain step; '' when nothing fits."""
        return "" if self.cell is None else describe_levers(self.cell)

    def as_dict(self) -> dict:
        cell = self.cell
        return {"method": self.method, "method_options": self.method_options, "backbone": self.backbone,
                "capacity_bytes": self.capacity_bytes, "cuda_context_bytes": self.cuda_context_bytes,
                "largest_plain_batch": self.largest_plain_batch, "target_batch": self.target_batch,
                "fits_target": None if self.target_batch is None else cell is not None,
                "levers": None if self.target_batch is None else self.levers,
                "cell": None if cell is None else cell.key,
                "lever_settings": None if cell is None else {"precision": cell.precision, **cell.levers},
                "needed_bytes": self.needed_bytes, "peak_bytes": self.peak_bytes, "flops_ratio": self.flops_ratio,
                "candidates": self.candidates, "replayed": self.replayed, "pruned": self.pruned,
                "image_px": self.image_px, "sizes_tried": list(self.sizes_tried) or None, "chosen": self.chosen,
                "answer": None if self.target_batch is None else self.answer,
                "prompts_per_image": self.prompts_per_image}


def candidates(plain: Cell) -> list[Cell]:
    """Every lever combination that applies to the plain cell's method at its batch size (the effective batch):
    each precision crossed with the values each declared lever offers the advisor (cadbench.vocabulary.levers:
    checkpointing, frozen dtype, each micro-batch that divides the batch, the lean encoder one image at a time). The
    plain cell itself is the first."""
    levers = declared_levers()
    cells = []
    for precision, *values in product(PRECISIONS, *(lever.tried_by_advisor(plain.batch_size) for lever in levers)):
        chosen = dict(zip((lever.name for lever in levers), values))
        if any(chosen[other] != needed for lever in levers if chosen[lever.name] != lever.default
               for other, needed in lever.needs.items()):
            continue
        cell = replace(plain, precision=precision, lever_settings=(), **chosen)
        if not_applicable(cell) is None:
            cells.append(cell)
    return cells


def _structure(cell: Cell) -> Cell:
    """The cell with only the levers that change which ops run (those whose cost class is not numerics or
    serialisation: checkpointing, lean encoder), in fp32."""
    return replace(cell, precision="fp32", lever_settings=(), **{
        name: value for name, value in cell.levers.items() if lever_named(name).cost not in ("numerics",
                                                                                              "serialisation")})


def _stronger_or_equal(strong: Cell, weak: Cell) -> bool:
    """Same precision, and every memory lever of `strong` at least as strong as `weak`'s (by each lever's declared
    strength)."""
    return strong.precision == weak.precision and all(
        lever.strength_of(getattr(strong, lever.name), strong.batch_size)
        >= lever.strength_of(getattr(weak, lever.name), weak.batch_size) for lever in declared_levers())


def advise(specs: Iterable[tuple[str, str]], backbones: Iterable[str], capacities_bytes: Iterable[int],
           target_batch: int | None = DEFAULT_TARGET_BATCH, cuda_context_bytes: int = DEFAULT_CUDA_CONTEXT_BYTES,
           max_batch: int = DEFAULT_MAX_BATCH, alloc_conf: AllocatorConfig | None = None,
           precisions: Iterable[str] = PRECISIONS, on_progress: Callable[[str, int], None] = lambda label, done: None,
           workers: int = 1, image_sizes: Iterable[int] | None = None,
           prompts_per_image: Iterable[str | int] = ("image",)) -> list[Advice]:
    """Advice for every (method name, method options) x backbone x capacity, the levers using only `precisions`.
    `target_batch=None` asks only for the largest plain batch (no lever search: that replays every lever combination
    at the target batch, which takes minutes per method x backbone on a CPU).

    Each method x backbone is searched on its own (estimates are shared within it, never between pairs), so with
    `workers` > 1 the pairs are searched by that many processes at once; the answers are the same, in the same
    order. `on_progress(label, done)` is called before each pair is searched (one process), or as each is finished
    (several), with the number of pairs finished so far.

    `image_sizes` are input sides in pixels (default: each backbone's native size); with several and a target batch,
    resolution is a lever (see the module's docstring) and each answer names its size. `prompts_per_image` (a task
    choice, never a lever) gives each value listed its own answers."""
    config = AllocatorConfig.from_environment() if alloc_conf is None else alloc_conf
    search = partial(_advise_pair, target_batch=target_batch, capacities=sorted(set(capacities_bytes)),
                     context=cuda_context_bytes, max_batch=max_batch, config=config, precisions=tuple(precisions))
    sizes = [None] if image_sizes is None else sorted(set(image_sizes), reverse=True)
    plains = [Cell(name, backbone, target_batch or 1, method_options=options,
                   image_size=0 if size is None else get_backbone(backbone).cell_image_size(size),
                   prompts_per_image=prompts)
              for backbone, prompts, (name, options), size in product(list(backbones), list(prompts_per_image),
                                                                      list(specs), sizes)]
    plains = [plain for plain in plains if not_defined(plain) is None]  # no advice where the method has no definition
    if workers <= 1 or len(plains) <= 1:
        answers = []
        for done, plain in enumerate(plains):
            on_progress(_pair_label(plain), done)
            answers += search(plain)
    else:
        answers = _in_processes(search, plains, workers, on_progress)
    if len(sizes) > 1 and target_batch is not None:
        return _resolution_as_lever(answers)
    return answers


def _resolution_as_lever(answers: list[Advice]) -> list[Advice]:
    """Every size's answers, each naming the sizes searched, and per method x backbone x card one of them `chosen`:
    the one at the largest size whose target batch fits (else the smallest size's "nothing fits"). `answers` hold
    each size's, largest size first."""
    def key(answer: Advice) -> tuple:
        return answer.method, answer.method_options, answer.backbone, answer.prompts_per_image, answer.capacity_bytes

    chosen: dict[tuple, Advice] = {}
    tried: dict[tuple, list[int]] = {}
    for answer in answers:
        tried.setdefault(key(answer), []).append(answer.image_px)
        if key(answer) not in chosen or chosen[key(answer)].cell is None:
            chosen[key(answer)] = answer
    return [replace(answer, sizes_tried=tuple(tried[key(answer)]), chosen=answer is chosen[key(answer)])
            for answer in answers]


def not_defined(plain: Cell) -> str | None:
    """Why the cell's method has no definition on its backbone's model family (sam_adapter on litemedsam), or None."""
    from cadbench.backbones import get_backbone
    from cadbench.registry import get_method

    return get_method(plain.method).not_defined_on(get_backbone(plain.backbone).family)


def _pair_label(plain: Cell) -> str:
    prompts = describe_prompts(plain.prompts_per_image)
    return (f"{plain.method_label} on {plain.backbone}" + (f" at {cell_pixels(plain)} px" if plain.image_size else "")
            + (f", {prompts}" if prompts else ""))


def _advise_pair(plain: Cell, target_batch: int | None, capacities: list[int], context: int, max_batch: int,
                 config: AllocatorConfig, precisions: tuple[str, ...]) -> list[Advice]:
    if target_batch is not None:
        return _advise_one(plain, capacities, context, max_batch, config, precisions)
    return [Advice(plain.method, plain.method_options, plain.backbone, capacity, context, largest, None, None, None,
                   None, None, 0, 0, 0, cell_pixels(plain), prompts_per_image=plain.prompts_per_image)
            for capacity, largest in zip(capacities, largest_fitting_batches(plain, capacities, context, max_batch,
                                                                             config))]


def _in_processes(search: Callable[[Cell], list[Advice]], plains: list[Cell], workers: int,
                  on_progress: Callable[[str, int], None]) -> list[Advice]:
    """`search` over the pairs in `workers` fresh processes (spawned: forking a process that already ran torch ops is
    unsafe), the largest backbones first so that no long search starts last. The workers ignore Ctrl-C; the caller
    gets it, and the pool is terminated whatever ends the search."""
    import multiprocessing

    order = sorted(range(len(plains)), key=lambda index: -_backbone_size(plains[index].backbone))
    results: dict[int, list[Advice]] = {}
    pool = multiprocessing.get_context("spawn").Pool(min(workers, len(plains)), initializer=_ignore_interrupts)
    try:
        for index, answers in pool.imap_unordered(partial(_indexed, search), [(i, plains[i]) for i in order]):
            results[index] = answers
            on_progress(_pair_label(plains[index]), len(results))
        pool.close()
    finally:
        pool.terminate()
        pool.join()
    return [answer for index in range(len(plains)) for answer in results[index]]


def _indexed(search: Callable[[Cell], list[Advice]], item: tuple[int, Cell]) -> tuple[int, list[Advice]]:
    index, plain = item
    return index, search(plain)


def _ignore_interrupts() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _backbone_size(name: str) -> int:
    spec = get_backbone(name)
    return spec.embed_dim * spec.depth


def _advise_one(plain: Cell, capacities: list[int], context: int, max_batch: int, config: AllocatorConfig,
                precisions: tuple[str, ...]) -> list[Advice]:
    estimates: dict[Cell, MemoryEstimate] = {}

    def estimate(cell: Cell) -> MemoryEstimate:
        if cell not in estimates:
            estimates[cell] = estimate_cell(cell, alloc_conf=config)
        return estimates[cell]

    def needed(cell: Cell) -> int:
        return estimate(cell).oom_capacity_bytes(context)

    options = [cell for cell in candidates(plain) if cell.precision in precisions]
    base_flops = estimate(plain).flops_per_step
    ranked: list[Cell] = []
    strongest: dict[str, Cell] = {}

    def rank() -> None:
        """The options, cheapest first, and the strongest of each precision. Ranking needs each structure's FLOPs at
        the target batch, one replay per structure (checkpointing, lean encoder), so it is done only once a card
        needs more than the plain step."""
        ratio = {structure: estimate(structure).flops_per_step / base_flops
                 for structure in dict.fromkeys(_structure(cell) for cell in options)}
        ranked.extend(sorted(options, key=lambda cell: cheapness(cell, ratio[_structure(cell)])))
        strongest.update({cell.precision: cell for cell in ranked
                          if not any(other != cell and _stronger_or_equal(other, cell) for other in ranked)})

    answers = []
    largest_plain = largest_fitting_batches(replace(plain, batch_size=1), capacities, context, max_batch, config,
                                            replayed=[plain.batch_size])
    for capacity, largest in zip(capacities, largest_plain):
        chosen, replayed, pruned = None, set(), 0
        failed: list[Cell] = []
        checked: set[str] = set()
        if not ranked and options[:1] == [plain] and needed(plain) <= capacity:
            # The plain step fits, and no combination is cheaper than it, since no lever lowers the FLOPs (see the
            # module docstring): the answer needs no ranking. Capacities come smallest first, so the first card where
            # the plain step does not fit ranks the options before any larger card is answered.
            chosen = plain
            replayed.add(plain)
        elif not ranked:
            rank()
        for index, cell in enumerate(ranked if chosen is None else ()):
            if index and cell.precision not in checked:
                # before the first combination of a precision beyond the plain step: the strongest of that
                # precision; where it does not fit, none of that precision does
                checked.add(cell.precision)
                top = strongest[cell.precision]
                if top != cell:
                    replayed.add(top)
                    if needed(top) > capacity:
                        failed.append(top)
            if cell in failed:
                continue  # the strongest of its precision, replayed above
            if any(_stronger_or_equal(other, cell) for other in failed):
                pruned += 1
                continue
            replayed.add(cell)
            if needed(cell) <= capacity:
                chosen = cell
                break
            failed.append(cell)
        found = estimate(chosen) if chosen is not None else None
        answers.append(Advice(
            plain.method, plain.method_options, plain.backbone, capacity, context, largest, plain.batch_size,
            chosen, None if found is None else found.oom_capacity_bytes(context),
            None if found is None else found.peak_bytes,
            None if found is None else found.flops_per_step / base_flops, len(options), len(replayed), pruned,
            cell_pixels(plain), prompts_per_image=plain.prompts_per_image))
    return answers
