"""Files written whole (cadbench.files): one helper for text, epoch checkpoints and weights, so every file cadbench
leaves is the old one or the new one, never a mix, and readable like any file its user makes."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from cadbench.errors import CadbenchError
from cadbench.files import read_side_file, replaced_atomically, write_atomically
from cadbench.training import finetune
from cadbench.training.weights import read_weights, save_weights


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_a_file_written_whole_replaces_the_old_one_and_gets_a_new_files_permissions(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with replaced_atomically(target) as temporary:
        assert temporary.parent == tmp_path and target.read_text() == "old"  # nothing visible until the end
        temporary.write_bytes(b"new")
    assert target.read_text() == "new" and _mode(target) == 0o666 & ~_umask()
    assert [path.name for path in tmp_path.iterdir()] == ["results.json"]


def test_a_writer_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "weights.safetensors"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with replaced_atomically(target) as temporary:
            temporary.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and [path.name for path in tmp_path.iterdir()] == [target.name]


def test_text_that_cannot_be_written_is_one_error_naming_the_file(tmp_path):
    with pytest.raises(CadbenchError, match="cannot write .*missing/results.json: folder .* does not exist"):
        write_atomically(tmp_path / "missing" / "results.json", "{}")
    write_atomically(tmp_path / "results.json", "{}\n")
    assert (tmp_path / "results.json").read_text() == "{}\n"


def test_an_epoch_checkpoint_that_fails_to_save_keeps_the_last_one(tmp_path, monkeypatch):
    path = tmp_path / "fine-tunes" / "cad.pt"
    finetune._save_checkpoint(path, {"epoch": 1})
    assert torch.load(path, weights_only=True) == {"epoch": 1} and _mode(path) == 0o666 & ~_umask()

    def full_disk(state, target):
        open(target, "wb").write(b"torn")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        finetune._save_checkpoint(path, {"epoch": 2})
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [child.name for child in path.parent.iterdir()] == ["cad.pt"]


def test_saved_weights_are_written_whole(tmp_path):
    layer = torch.nn.Linear(2, 2)
    path = tmp_path / "weights" / "cad.safetensors"
    sha256 = save_weights(layer, path, {"method": "cad"})
    tensors, metadata = read_weights(path)
    assert set(tensors) == {"weight", "bias"} and metadata["method"] == "cad" and len(sha256) == 64
    assert [child.name for child in path.parent.iterdir()] == ["cad.safetensors"]


def test_a_side_file_is_read_as_the_json_object_it_holds_and_a_missing_one_as_empty(tmp_path, capsys):
    (tmp_path / "timelines.json").write_text('{"cad/vit_b/1/fp32": [["forward", 5]]}')
    assert read_side_file(tmp_path / "timelines.json", "unused") == {"cad/vit_b/1/fp32": [["forward", 5]]}
    assert read_side_file(tmp_path / "loss_curves.json", "unused") == {}
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("content", [b"{broken", b"[1, 2]", b"\xff\xfe", b"NaN"])
def test_a_damaged_side_file_costs_what_it_holds_with_one_warning_line(tmp_path, capsys, content):
    path = tmp_path / "loss_curves.json"
    path.write_bytes(content)
    assert read_side_file(path, "its charts are left out") == {}
    assert capsys.readouterr().err == (f"cadbench: warning: {path} is damaged (not a JSON object); its charts are "
                                       f"left out\n")
    set_aside = []
    assert read_side_file(path, lambda damaged: set_aside.append(damaged) or "rebuilt from results.jsonl") == {}
    assert set_aside == [path] and capsys.readouterr().err.count("\n") == 1


def test_a_store_sets_a_damaged_side_file_aside_and_rebuilds_it_from_the_journal(tmp_path, capsys):
    from cadbench.harness.results.rows import explain_nulls, new_row
    from cadbench.harness.results.store import ResultStore

    row = new_row({"method": "cad", "backbone": "vit_b", "test_scale": False, "batch_size": 1, "precision": "fp32"},
                  {"torch_version": "test"})
    row.update(status="ok", _timeline=[["forward", 5]])
    with ResultStore(tmp_path).open({"mode": "estimate"}, {}) as store:
        store.append(explain_nulls(row, {"*": "not measured in this test"}))
    (tmp_path / "timelines.json").write_text("{broken")
    capsys.readouterr()
    with ResultStore(tmp_path).open({"mode": "estimate"}, {}):
        pass
    assert (tmp_path / "timelines.json.damaged").read_text() == "{broken"
    assert json.loads((tmp_path / "timelines.json").read_text()) == {"cad/vit_b/1/fp32": [["forward", 5]]}
    assert capsys.readouterr().err == (f"cadbench: warning: {tmp_path / 'timelines.json'} is damaged (not a JSON "
                                       f"object); rebuilt from results.jsonl; the damaged file is kept as "
                                       f"timelines.json.damaged\n")
