"""The fit advisor and its search: every reported batch replayed exactly at B and B + 1, the cheapest levers found
in the stated order, and each answer replayed at the target batch."""

import pytest

from cadbench.estimator import AllocatorConfig, advisor, estimate_cell, fit
from cadbench.estimator.advisor import advise, candidates
from cadbench.estimator.fit import largest_fitting_batch, search_largest
from cadbench.vocabulary.cell import Cell

CONTEXT = 0
DEFAULT_ALLOCATOR = AllocatorConfig()


def _curves():
    """Memory curves the search must answer exactly: affine, convex, concave, with a kink, with a plateau."""
    return {
        "affine": lambda b: 1000 + 300 * b,
        "convex": lambda b: 1000 + 10 * b * b,
        "concave": lambda b: 1000 + int(2000 * b ** 0.5),
        "kinked": lambda b: 1000 + 100 * b + (5000 if b > 9 else 0),
        "plateau": lambda b: 1000 + 300 * min(b, 7) + 300 * max(b - 20, 0),
    }


@pytest.mark.parametrize("curve", list(_curves()))
@pytest.mark.parametrize("capacity", [900, 1000, 1300, 3000, 4321, 7000, 9000, 30000])
def test_the_largest_batch_is_replayed_at_b_and_b_plus_one_and_equals_a_full_scan(curve, capacity):
    needed, calls = _curves()[curve], []

    def replay(batch_size: int) -> int:
        calls.append(batch_size)
        return needed(batch_size)

    largest = search_largest(replay, capacity, max_batch=64)
    assert largest == max([b for b in range(1, 65) if all(needed(c) <= capacity for c in range(1, b + 1))],
                          default=0)
    if largest:
        assert largest in calls and needed(largest) <= capacity
    if largest < 64:
        assert largest + 1 in calls and needed(largest + 1) > capacity  # never extrapolated
    assert len(calls) == len(set(calls)) and len(calls) <= 16  # about two bisections at worst, far from a line


def test_an_affine_curve_takes_at_most_four_replays_whatever_the_answer():
    """Two to draw the line, then the predicted B and B + 1."""
    for capacity, largest in ((1700, 2), (5000, 13), (15000, 46)):
        calls = []
        assert search_largest(lambda b: calls.append(b) or 1000 + 300 * b, capacity, max_batch=64) == largest
        assert len(calls) <= 4 and calls[-2:] in ([largest, largest + 1], [largest + 1, largest]), calls


@pytest.mark.parametrize("curve", list(_curves()))
@pytest.mark.parametrize("capacity", [900, 1300, 4321, 9000, 30000])
@pytest.mark.parametrize("free", [(4,), (1,), (2, 33), (64,)])
def test_batch_sizes_already_replayed_change_what_is_replayed_never_the_answer(curve, capacity, free):
    needed, calls = _curves()[curve], []
    largest = search_largest(lambda b: calls.append(b) or needed(b), capacity, max_batch=64, free=free)
    assert largest == search_largest(needed, capacity, max_batch=64)
    if 0 < largest < 64:
        assert {largest, largest + 1} <= set(calls)  # still answered from replays at B and B + 1
    assert len(calls) == len(set(calls))


def test_a_target_batch_already_replayed_saves_the_second_point_of_the_line():
    """`fit --target-batch 4` has replayed batch 4 before it searches: the line goes through 1 and 4, not 1 and 2."""
    for capacity, largest in ((5000, 13), (15000, 46)):
        calls = []
        assert search_largest(lambda b: calls.append(b) or 1000 + 300 * b, capacity, max_batch=64, free=(4,)) \
            == largest
        fresh = [b for b in calls if b != 4]  # 4 costs nothing: its estimate is kept
        assert 2 not in calls and len(fresh) <= 3, calls


def _bends_down(batch_size: int) -> int:
    """The shape of SAM's OOM line (decoder_only on vit_b, estimated, in MB: 4,354 at batch 1, 2,830 more per image
    to batch 6, then 2,600 more per image): a line through its first points overshoots what later images add."""
    return 4354 + 2830 * (min(batch_size, 6) - 1) + 2600 * max(batch_size - 6, 0)


@pytest.mark.parametrize("capacity", [8000, 24000, 40000, 48000, 80000, 160000])
def test_a_prediction_that_falls_short_is_followed_by_a_new_line_not_a_leap_toward_max_batch(capacity):
    """Replays grow dearer with the batch size: while no size is known not to fit, nothing above B + 1 is replayed
    (the search used to bisect toward max_batch after a short prediction: at 24 GB it replayed 36 for an answer
    of 8)."""
    calls = []
    largest = search_largest(lambda b: calls.append(b) or _bends_down(b), capacity, max_batch=64)
    assert largest == max(b for b in range(1, 65) if _bends_down(b) <= capacity)
    assert max(calls) <= largest + 1 and len(calls) <= 6, calls


def test_a_line_that_falls_between_the_two_largest_sizes_that_fit_is_drawn_from_the_smallest_instead():
    """The OOM line can dip from one batch size to the next (vit_h's decoder_only needs 0.46 GB less at 12 than at
    11, estimated). Through 11 and 12 the line falls; the search used to bisect toward max_batch there (replaying
    38 for an answer of 12), and now draws the line through the smallest and the largest sizes that fit."""
    def dips(batch_size: int) -> int:
        return 1000 + 300 * batch_size - (400 if batch_size == 12 else 0)

    calls = []
    assert search_largest(lambda b: calls.append(b) or dips(b), 4300, max_batch=64) == 12
    assert calls == [1, 2, 11, 12, 13]


def test_cards_searched_together_answer_as_separate_searches_from_fewer_replays(monkeypatch):
    """`largest_fitting_batches`: every batch size replayed once for all the cards, each answer still replayed at B
    and B + 1, and after the first card at most three new replays per card (its B and B + 1, here)."""
    replayed = []

    class Needs:
        def __init__(self, batch_size: int) -> None:
            self.batch_size = batch_size

        def oom_capacity_bytes(self, context: int) -> int:
            return _bends_down(self.batch_size) + context

    def fake_estimate(cell, alloc_conf=None):
        replayed.append(cell.batch_size)
        return Needs(cell.batch_size)

    monkeypatch.setattr(fit, "estimate_cell", fake_estimate)
    capacities = [48000, 8000, 80000, 24000, 40000]  # answered in this order, searched smallest first
    answers = fit.largest_fitting_batches(Cell("cad", "test_scale", 1), capacities, cuda_context_bytes=0,
                                          alloc_conf=DEFAULT_ALLOCATOR)
    assert answers == [search_largest(_bends_down, capacity, max_batch=64) for capacity in capacities]
    assert len(replayed) == len(set(replayed))
    for largest in answers:
        assert {largest, largest + 1} <= set(replayed)
    separate = []
    for capacity in capacities:
        search_largest(lambda b: separate.append(b) or _bends_down(b), capacity, max_batch=64)
    assert len(replayed) <= 3 + 3 * (len(capacities) - 1) < len(separate), (replayed, separate)


def test_a_real_cell_is_answered_from_exact_replays_at_b_and_b_plus_one(monkeypatch):
    replayed = []

    def spy(cell, *args, **kwargs):
        replayed.append(cell.batch_size)
        return estimate_cell(cell, *args, **kwargs)

    monkeypatch.setattr(fit, "estimate_cell", spy)
    cell = Cell("cad", "test_scale", 1)
    needed = {b: estimate_cell(Cell("cad", "test_scale", b), alloc_conf=DEFAULT_ALLOCATOR).oom_capacity_bytes(CONTEXT)
              for b in range(1, 8)}
    capacity = (needed[4] + needed[5]) // 2
    largest = largest_fitting_batch(cell, capacity, CONTEXT, max_batch=32, alloc_conf=DEFAULT_ALLOCATOR)
    assert largest == 4 and {4, 5} <= set(replayed)


def test_candidates_are_the_lever_combinations_that_apply_plain_first():
    through = candidates(Cell("sam_adapter", "test_scale", 4))
    assert through[0] == Cell("sam_adapter", "test_scale", 4)
    assert len(through) == 3 * 2 * 2 * 3  # precision x checkpointing x frozen dtype x micro-batch (none, 2, 1)
    assert all(cell.lean_encoder == "off" for cell in through)
    no_grad = candidates(Cell("cad", "test_scale", 4))
    assert len(no_grad) == 36 and all(cell.checkpointing == "none" for cell in no_grad)


@pytest.fixture(scope="module")
def sam_adapter_needs():
    return {name: estimate_cell(cell, alloc_conf=DEFAULT_ALLOCATOR).oom_capacity_bytes(CONTEXT) for name, cell in {
        "plain": Cell("sam_adapter", "test_scale", 4),
        "micro 2": Cell("sam_adapter", "test_scale", 4, micro_batch=2),
    }.items()}


def test_the_cheapest_combination_is_accumulation_before_half_precision_or_recomputation(sam_adapter_needs,
                                                                                          monkeypatch):
    replayed = []

    def spy(cell, *args, **kwargs):
        replayed.append(cell)
        return estimate_cell(cell, *args, **kwargs)

    monkeypatch.setattr(advisor, "estimate_cell", spy)
    roomy = sam_adapter_needs["plain"]
    tight = (sam_adapter_needs["micro 2"] + sam_adapter_needs["plain"]) // 2
    assert tight < roomy
    answers = advise([("sam_adapter", "")], ["test_scale"], [tight, roomy], target_batch=4,
                     cuda_context_bytes=CONTEXT, max_batch=8, alloc_conf=DEFAULT_ALLOCATOR)
    by_capacity = {answer.capacity_bytes: answer for answer in answers}
    assert by_capacity[roomy].levers == "none" and by_capacity[roomy].flops_ratio == 1.0
    # the plain step at 4 does not fit the tight card; micro-batches of 2 run the same FLOPs in full precision
    chosen = by_capacity[tight]
    assert chosen.cell == Cell("sam_adapter", "test_scale", 4, micro_batch=2) and chosen.levers == "micro-batch 2"
    assert chosen.cell in replayed and chosen.needed_bytes <= tight  # the answer was replayed at the target
    assert chosen.largest_plain_batch < 4 <= by_capacity[roomy].largest_plain_batch
    assert abs(chosen.flops_ratio - 1) < 0.01


def test_where_nothing_fits_it_says_so():
    [answer] = advise([("decoder_only", "")], ["test_scale"], [10**6], target_batch=2, cuda_context_bytes=CONTEXT,
                      max_batch=4, alloc_conf=DEFAULT_ALLOCATOR)
    assert answer.cell is None and answer.largest_plain_batch == 0 and answer.as_dict()["fits_target"] is False
    # the plain step, then the strongest of each precision; every other combination is pruned by one of those
    assert (answer.replayed, answer.pruned) == (4, answer.candidates - 4)


def test_a_combination_is_pruned_only_by_a_stronger_one_of_the_same_precision():
    weak = Cell("sam_adapter", "vit_b", 4, micro_batch=2)
    assert advisor._stronger_or_equal(Cell("sam_adapter", "vit_b", 4, checkpointing="encoder", micro_batch=1), weak)
    assert not advisor._stronger_or_equal(Cell("sam_adapter", "vit_b", 4, checkpointing="encoder"), weak)
    assert not advisor._stronger_or_equal(Cell("sam_adapter", "vit_b", 4, "bf16", micro_batch=1), weak)


# One method per structure on each family (other methods on each), since a structure's FLOPs come from the lever
# (the recomputed encoder, the fused attention), not from the method.
@pytest.mark.parametrize("backbone,methods", [("test_scale", ("sam_adapter", "cad")),
                                              ("sam2_test_scale", ("lora", "decoder_only"))])
def test_no_lever_lowers_the_flops_of_the_step_so_nothing_ranks_before_the_plain_step(backbone, methods):
    """The advisor answers the plain step, unranked, wherever it fits (advisor's docstring): that holds only while
    every structure a lever makes (checkpointing, lean encoder) runs at least the plain step's FLOPs."""
    from cadbench.backbones import get_backbone

    if get_backbone(backbone).missing_requirement():
        pytest.skip(get_backbone(backbone).missing_requirement())
    checked = set()
    for method in methods:
        plain = Cell(method, backbone, 2)
        if advisor.not_defined(plain):
            continue
        base = estimate_cell(plain, alloc_conf=DEFAULT_ALLOCATOR).flops_per_step
        for structure in dict.fromkeys(advisor._structure(cell) for cell in candidates(plain)):
            if structure != plain:
                checked.add((method, structure.key))
                assert estimate_cell(structure, alloc_conf=DEFAULT_ALLOCATOR).flops_per_step >= base, structure.key
    # checkpointing where the backward goes through the encoder, the lean encoder where it does not
    assert {key.split("/")[-1] for _, key in checked} == {"checkpointing=encoder", "lean_encoder=on"}
    assert len(checked) == 2


def test_where_the_plain_step_fits_every_card_it_is_the_answer_and_no_structure_is_replayed(monkeypatch):
    replayed = []

    def spy(cell, *args, **kwargs):
        replayed.append(cell)
        return estimate_cell(cell, *args, **kwargs)

    monkeypatch.setattr(advisor, "estimate_cell", spy)
    roomy = 10 ** 12
    [answer] = advise([("lora", "")], ["test_scale"], [roomy], target_batch=4, cuda_context_bytes=CONTEXT,
                      max_batch=4, alloc_conf=DEFAULT_ALLOCATOR)
    plain = Cell("lora", "test_scale", 4)
    assert answer.cell == plain and answer.levers == "none" and answer.flops_ratio == 1.0
    assert (answer.replayed, answer.pruned, answer.candidates) == (1, 0, len(candidates(plain)))
    assert not any(cell.levers for cell in replayed), [cell.key for cell in replayed if cell.levers]
    # the ranking it skipped puts the plain step first too, ahead of the checkpointed structure it would replay
    tight = estimate_cell(plain, alloc_conf=DEFAULT_ALLOCATOR).oom_capacity_bytes(CONTEXT) - 1
    ranked = advise([("lora", "")], ["test_scale"], [tight, roomy], target_batch=4, cuda_context_bytes=CONTEXT,
                    max_batch=4, alloc_conf=DEFAULT_ALLOCATOR)
    assert ranked[1].cell == plain and ranked[1].replayed == 1 and ranked[0].cell != plain
    assert any(cell.checkpointing == "encoder" for cell in replayed)
