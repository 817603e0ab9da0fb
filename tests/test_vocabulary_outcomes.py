"""The words of a result row (cadbench.vocabulary.outcomes): declared once as Literals, their tuples derived, and
every status, memory source or throughput source that cadbench writes or compares is one of them.

Rows are plain dicts, so a type checker cannot see a misspelt `row["status"] == "okay"`; this reads the source with
`ast` (nothing is imported) and finds every such word."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

from cadbench.vocabulary import outcomes

ROOT = Path(__file__).resolve().parents[1]
WORDS = {"status": set(outcomes.STATUSES), "memory_source": set(outcomes.MEMORY_SOURCES),
         "throughput_source": set(outcomes.THROUGHPUT_SOURCES), "step_kind": set(outcomes.STEP_KINDS)}
SETTERS = {"set_outcome": "status"}  # functions whose second argument is one of the words


def _field(node: ast.AST) -> str | None:
    """The row field an expression reads: row["status"], row.get("status"), a variable named status."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value in WORDS:
        return node.slice.value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args
            and isinstance(node.args[0], ast.Constant) and node.args[0].value in WORDS):
        return node.args[0].value
    if isinstance(node, ast.Name) and node.id in WORDS:
        return node.id
    return None


def _strings(node: ast.AST) -> list[str]:
    """The string constants an expression is made of: "ok", ("ok", "oom"), {"ok"}, a conditional of them."""
    if isinstance(node, ast.Constant):
        return [node.value] if isinstance(node.value, str) else []
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [word for item in node.elts for word in _strings(item)]
    if isinstance(node, ast.IfExp):
        return _strings(node.body) + _strings(node.orelse)
    return []


def words_used(source: str) -> list[tuple[str, str, int]]:
    """(field, word, line) for every word compared with or written to a row's status, memory or throughput source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            for index, side in enumerate(sides):
                if (field := _field(side)) is not None:
                    found += [(field, word, node.lineno) for other in sides[:index] + sides[index + 1:]
                              for word in _strings(other)]
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                pairs = (zip(target.elts, node.value.elts) if isinstance(target, ast.Tuple)
                         and isinstance(node.value, ast.Tuple) else [(target, node.value)])
                found += [(field, word, node.lineno) for part, value in pairs
                          if (field := _field(part)) is not None for word in _strings(value)]
        elif isinstance(node, ast.Call):
            found += [(keyword.arg, word, node.lineno) for keyword in node.keywords if keyword.arg in WORDS
                      for word in _strings(keyword.value)]
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name in SETTERS and len(node.args) > 1:
                found += [(SETTERS[name], word, node.lineno) for word in _strings(node.args[1])]
        elif isinstance(node, ast.Dict):
            found += [(key.value, word, node.lineno) for key, value in zip(node.keys, node.values)
                      if isinstance(key, ast.Constant) and key.value in WORDS for word in _strings(value)]
    return found


def test_the_tuples_are_derived_from_the_literals():
    assert outcomes.STATUSES == get_args(outcomes.Status) == ("ok", "oom", "error", "not_applicable")
    assert outcomes.FINISHED_STATUSES == ("ok", "oom", "not_applicable")  # errors are retried on resume
    assert outcomes.MEMORY_SOURCES == get_args(outcomes.MemorySource)
    assert outcomes.THROUGHPUT_SOURCES == get_args(outcomes.ThroughputSource)


def test_every_status_and_source_that_cadbench_writes_or_compares_is_a_declared_word():
    used = [(f"{path.relative_to(ROOT)}:{line}", field, word)
            for folder in ("cadbench", "methods", "datasets") for path in sorted((ROOT / folder).rglob("*.py"))
            for field, word, line in words_used(path.read_text())]
    assert {(field, word) for _, field, word in used} >= {("status", "not_applicable"), ("memory_source", "cuda")}
    unknown = [f"{where}: {field} {word!r}" for where, field, word in used if word not in WORDS[field]]
    assert not unknown, "words not declared in cadbench.vocabulary.outcomes: " + "; ".join(unknown)


def test_the_reader_finds_words_in_comparisons_assignments_and_calls():
    source = ('row["status"] = "ok"\nrow["status"], row["error"] = "oops", None\nif row.get("memory_source") != '
              '"estimatd": pass\nrows[rows["status"] == "fine"]\n'
              'row.update(throughput_source="gpu")\nset_outcome(row, "done", "why")\nx = {"status": "gone"}\n'
              'ok = status in ("ok", "oom")\n')
    assert sorted((field, word) for field, word, _ in words_used(source)) == sorted([
        ("status", "ok"), ("status", "oops"), ("memory_source", "estimatd"), ("status", "fine"),
        ("throughput_source", "gpu"), ("status", "done"), ("status", "gone"), ("status", "ok"), ("status", "oom")])
