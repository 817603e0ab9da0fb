"""Charts of the report: what each one shows, read back from its SVG."""

from __future__ import annotations

import re

from cadbench.report.charts import loss_curves, phase_starts, timelines


def _axes_count(svg: str) -> int:
    return len(re.findall(r'<g id="axes_\d+"', svg))


def test_the_loss_chart_has_one_panel_per_method_and_a_line_per_batch_size_in_each():
    curves = {f"{method}/test_scale/{batch}/fp32": [1.6, 1.55, 1.5]
              for method in ("cad", "sam_adapter", "lora", "full") for batch in (1, 2, 4)}
    svg = loss_curves(curves, "pipeline check: fine-tuning loss")
    assert _axes_count(svg) == 4  # a 2 x 3 grid whose two unused places are not drawn
    for method in ("cad", "sam_adapter", "lora", "full"):
        assert svg.count(f"<!-- {method} -->") == 1  # the panel's title
    for label in ("batch 1", "batch 2", "batch 4"):
        assert f"<!-- {label} -->" in svg  # one legend entry per batch size, not one per curve
    assert "test_scale" not in svg  # what all curves share is not repeated on every line


def test_phase_starts_are_the_first_point_of_the_backward_pass_and_of_the_optimizer_step():
    points = [["forward", 1], ["forward", 5], ["backward", 7], ["backward", 3], ["optimizer", 4], ["optimizer", 2]]
    assert phase_starts(points) == {"backward": 2, "optimizer": 4}
    assert phase_starts([[0, "forward", 1], [1, "backward", 2]]) == {"backward": 1}  # (event, phase, bytes) points


def test_the_live_memory_timeline_marks_where_backward_and_the_optimizer_step_begin():
    series = {"cad": [["forward", 10**9], ["backward", 2 * 10**9], ["optimizer", 10**9]],
              "sam_adapter": [["forward", 10**9], ["forward", 3 * 10**9], ["backward", 2 * 10**9]]}
    svg = timelines(series, "vit_b, batch 1: live memory over one step")
    assert "<!-- backward begins -->" in svg and "<!-- optimizer step begins -->" in svg
