"""The registry: which methods exist, which can run here, and method specs turned into objects once."""

import pytest

import cadbench
from cadbench.errors import CadbenchError
from cadbench.harness.grid import make_cell
from cadbench.methods import BUILTIN_METHODS, PeftAdapter
from cadbench.registry import default_methods, parse_method_spec, resolve_method, unavailable_methods

MISSING = 'needs the peft package: pip install "cadbench[peft]"'


@pytest.fixture
def without_peft(monkeypatch):
    """As if the peft extra were not installed."""
    monkeypatch.setattr(PeftAdapter, "missing_requirement", classmethod(lambda cls: MISSING))
    resolve_method.cache_clear()
    yield
    resolve_method.cache_clear()


def test_a_spec_becomes_a_method_with_typed_canonical_options():
    spec = parse_method_spec("lora:rank=16")
    assert spec.method is BUILTIN_METHODS["lora"] and spec.options.rank == 16
    assert (spec.name, spec.options_text, spec.text, spec.label) == ("lora", "rank=16", "lora:rank=16",
                                                                     "lora (rank 16)")
    assert parse_method_spec("lora:rank=4").text == "lora"  # at the defaults: the bare name
    assert parse_method_spec("cad").text == "cad"


def test_without_the_peft_package_peft_is_refused_naming_the_extra_and_left_out_of_the_default_grid(without_peft):
    assert "peft" not in default_methods() and {"lora", "full", "cad"} <= set(default_methods())
    assert unavailable_methods() == {"peft": MISSING}
    with pytest.raises(CadbenchError, match=r'^method peft needs the peft package: pip install "cadbench\[peft\]"$'):
        make_cell("peft", "vit_b", 1)


def test_the_default_run_without_peft_leaves_it_out_and_says_so(without_peft, tmp_path, capsys):
    frame = cadbench.run(backbones=["test_scale"], batch_sizes=[1], estimate_only=True, out=tmp_path / "out",
                         show_progress=False, print_summary=False)
    assert set(frame["method"]) == set(default_methods()) and "peft" not in set(frame["method"])
    assert f"cadbench: note: method peft is not in the grid: it {MISSING}" in capsys.readouterr().err
