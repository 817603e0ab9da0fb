"""One declaration per lever: a lever declared here, in this file alone, reaches the CLI's help, the grid, the rows,
the terminal table and the advisor, with no edit anywhere else (cadbench.vocabulary.levers)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pytest

from cadbench.cli import main
from cadbench.errors import CadbenchError
from cadbench.estimator.advisor import candidates
from cadbench.estimator.cheapest import cheapness, describe_levers
from cadbench.harness.grid import cell_label, expand_grid
from cadbench.harness.results.rows import contract_columns
from cadbench.training.levers import Lever, not_applicable, register_lever, unregister_lever
from cadbench.vocabulary.cell import Cell, lever_label
from cadbench.vocabulary.levers import LeverDeclaration, declare_lever, declared_levers, withdraw_lever


def _only_no_grad_encoders(method_cls) -> str | None:
    return None if method_cls.encoder_under_no_grad else "the tag is for methods whose encoder runs under no_grad"


@dataclass(frozen=True)
class Tag(Lever):
    """The behaviour of the test's lever: it marks the step's plan and changes nothing the step computes."""

    field = "test_tag"

    @classmethod
    def from_cell(cls, cell):
        return cls() if cell.test_tag == "on" else None

    def apply(self, trainee, plan):
        return plan


@pytest.fixture
def tag_lever():
    declaration = declare_lever(LeverDeclaration(
        name="test_tag", flag="--test-tag", default="off", values=("off", "on"), label="tagged {value}",
        help="a lever that only this test declares", applies_to=_only_no_grad_encoders,
        advice_values=lambda batch: ("off", "on"), cost="numerics"))
    register_lever(Tag)
    yield declaration
    unregister_lever("test_tag")
    withdraw_lever("test_tag")


def test_a_lever_declared_in_a_test_appears_in_the_help_of_every_grid_command(tag_lever, capsys):
    for command in ("run", "estimate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        help_text = " ".join(capsys.readouterr().out.split())
        assert "--test-tag" in help_text and "a lever that only this test declares (default: off)" in help_text


def test_a_declared_lever_is_a_grid_dimension_with_its_key_label_and_checks(tag_lever):
    cells = expand_grid(["decoder_only"], ["test_scale"], [2], levers={"test_tag": ["off", "on"]})
    assert [cell.key for cell in cells] == ["decoder_only/test_scale/2/fp32",
                                            "decoder_only/test_scale/2/fp32/test_tag=on"]
    tagged = cells[1]
    assert tagged.test_tag == "on" and cells[0].test_tag == "off" and tagged.plain == cells[0]
    assert "test_tag" in Cell.key_columns() and "test_tag" in contract_columns()
    assert cell_label(tagged).endswith("· tagged on") and lever_label(tagged.as_dict()) == "tagged on"
    assert Cell.from_row(tagged.as_dict()) == tagged and replace(tagged, test_tag="off") == cells[0]
    with pytest.raises(CadbenchError, match=r"unknown test_tag 'maybe' \(--test-tag\); valid: off, on"):
        Cell("decoder_only", "test_scale", 2, test_tag="maybe")
    assert not_applicable(Cell("decoder_only", "test_scale", 2, test_tag="on")) is None
    assert not_applicable(Cell("lora", "test_scale", 2, test_tag="on")) == (
        "tagged on does not apply to lora: the tag is for methods whose encoder runs under no_grad")


def test_a_declared_lever_reaches_the_rows_and_the_terminal_table(tag_lever, tmp_path, capsys):
    out = tmp_path / "estimate"
    assert main(["estimate", "--methods", "decoder_only,lora", "--backbone", "test_scale", "--batch-sizes", "1",
                 "--test-tag", "off,on", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    rows = {row["method"] + "/" + row["test_tag"]: row
            for row in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == {"decoder_only/off", "decoder_only/on", "lora/off", "lora/on"}
    assert rows["decoder_only/on"]["status"] == "ok" and rows["decoder_only/on"]["peak_memory_bytes"] > 0
    # the tag changes nothing the step computes, so its estimate equals the untagged one
    assert rows["decoder_only/on"]["peak_memory_bytes"] == rows["decoder_only/off"]["peak_memory_bytes"]
    assert rows["lora/on"]["status"] == "not_applicable" and "tagged on does not apply to lora" in rows[
        "lora/on"]["error"]
    assert "test_tag" in (out / "results.csv").read_text().splitlines()[0].split(",")
    assert "decoder_only + tagged on" in printed


def test_the_advisor_tries_a_declared_lever_and_ranks_it_by_its_cost_class(tag_lever):
    plain = Cell("decoder_only", "test_scale", 2)
    tried = candidates(plain)
    tagged = [cell for cell in tried if cell.test_tag == "on"]
    assert len(tagged) == len(tried) // 2 and tried[0] == plain
    assert describe_levers(replace(plain, test_tag="on")) == "tagged on"
    # a numerics-class lever ranks after the same combination without it, and before anything in bf16
    assert cheapness(plain, 1.0) < cheapness(replace(plain, test_tag="on"), 1.0) < cheapness(
        replace(plain, precision="bf16"), 1.0)
    assert not any(cell.test_tag == "on" for cell in candidates(Cell("lora", "test_scale", 2)))


def test_the_fixture_leaves_the_built_in_levers_as_they_were(tag_lever):
    assert [lever.name for lever in declared_levers()] == [
        "checkpointing", "frozen_dtype", "micro_batch", "lean_encoder", "encoder_chunk", "test_tag"]


def test_every_declared_lever_has_a_behaviour_and_every_behaviour_a_declaration():
    from cadbench.training.levers import available_levers

    behaviours = set(available_levers()) - {"precision"}  # precision is a cell dimension of its own
    assert behaviours == {lever.name for lever in declared_levers() if lever.part_of is None}
    assert all(lever.part_of in behaviours for lever in declared_levers() if lever.part_of)
