"""Step-time statistics: median, p90, and when a timing is too uneven to be a trend."""

from cadbench.measure.timing import NOISY_SPREAD, StepTimes


def test_a_timing_whose_p90_step_is_far_above_its_median_is_noisy():
    # the cell: median step 0.15 s, p90 3.2 s under outside load
    noisy = StepTimes([0.15] * 8 + [3.2, 3.4])
    assert noisy.median == 0.15 and noisy.p90 == 3.2 and noisy.noisy
    steady = StepTimes([0.15, 0.16, 0.15, 0.17, 0.15, 0.16, 0.18, 0.15, 0.16, 0.2])
    assert steady.spread < NOISY_SPREAD and not steady.noisy
