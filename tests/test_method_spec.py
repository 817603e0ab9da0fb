"""The text form of method specs: where one spec ends and the next begins, and how options are written."""

import pytest

from cadbench.errors import CadbenchError
from cadbench.vocabulary.method_spec import (join_method_spec, method_label, option_items, split_method_list,
    split_method_spec)


@pytest.mark.parametrize("text, specs", [
    ("cad", ["cad"]),
    ("lora:rank=16,lora,cad", ["lora:rank=16", "lora", "cad"]),
    ("peft:type=lora,r=8,target_modules=qkv,cad", ["peft:type=lora,r=8,target_modules=qkv", "cad"]),
    ("peft:target_modules=qkv+proj,lora_alpha=16,lora:rank=2", ["peft:target_modules=qkv+proj,lora_alpha=16",
                                                                "lora:rank=2"]),
    ("lora,rank=16", ["lora:rank=16"]),  # an option after a bare name starts that name's options
    (" cad , decoder_only ", ["cad", "decoder_only"]),
    ("peft:config=configs/a:b.json", ["peft:config=configs/a:b.json"]),  # ':' after the '=' belongs to the value
])
def test_an_item_with_equals_but_no_colon_before_it_continues_the_previous_method(text, specs):
    assert split_method_list(text) == specs


@pytest.mark.parametrize("text, message", [
    ("rank=16,lora", "method option 'rank=16' comes before any method name"),
    (",", "empty item in ','"),
    ("cad,,decoder_only", "empty item"),  # a stray comma is refused, as in every comma list
    ("cad,decoder_only,", "empty item"),
])
def test_a_list_that_cannot_be_split_is_refused_in_one_line(text, message):
    with pytest.raises(CadbenchError, match=message):
        split_method_list(text)


def test_a_spec_splits_into_name_and_options_and_joins_back():
    assert split_method_spec("lora:rank=16") == ("lora", "rank=16")
    assert split_method_spec("cad") == ("cad", "")
    assert join_method_spec("lora", "rank=16") == "lora:rank=16" and join_method_spec("cad", "") == "cad"


def test_options_are_name_value_pairs_given_once():
    assert option_items("peft", "type=lora,r=8,target_modules=qkv+proj") == {
        "type": "lora", "r": "8", "target_modules": "qkv+proj"}
    assert option_items("lora", "") == {}
    with pytest.raises(CadbenchError, match="method lora: option 'rank' is given twice"):
        option_items("lora", "rank=2,rank=4")
    with pytest.raises(CadbenchError, match="method lora: option 'rank' is not of the form name=value"):
        option_items("lora", "rank")


def test_labels_show_options_for_people_and_nothing_at_the_defaults():
    assert method_label("lora", "rank=16") == "lora (rank 16)"
    assert method_label("peft", "type=loha,target_modules=qkv+proj") == "peft (type loha, target_modules qkv + proj)"
    assert method_label("cad") == "cad"
