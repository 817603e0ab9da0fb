"""Official-format checkpoints (a plain `Sam.state_dict()` saved with torch.save) load into the right backbone only."""

import hashlib

import pytest
import torch

from cadbench.backbones import RANDOM_WEIGHTS, build_sam
from cadbench.errors import CadbenchError


@pytest.fixture
def test_scale_checkpoint(tmp_path):
    sam = build_sam("test_scale").sam
    path = tmp_path / "sam_test_scale.pth"
    torch.save(sam.state_dict(), path)
    return path, sam.state_dict()


def test_checkpoint_loads_into_its_backbone(test_scale_checkpoint):
    path, saved = test_scale_checkpoint
    torch.manual_seed(123)  # a different random init, so equality below comes from the checkpoint
    built = build_sam("test_scale", checkpoint=path)
    for key, value in built.sam.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert built.weights == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_random_weights_say_so():
    assert build_sam("test_scale").weights == RANDOM_WEIGHTS


def test_wrong_backbone_is_refused_with_one_line_naming_backbone_and_keys(test_scale_checkpoint):
    path, _ = test_scale_checkpoint
    with pytest.raises(CadbenchError) as error:
        build_sam("vit_b", checkpoint=path)  # the mismatch is found on the meta device: nothing full-size allocated
    message = str(error.value)
    assert "\n" not in message
    assert "backbone vit_b" in message and str(path) in message
    assert "missing keys" in message and "image_encoder.blocks." in message
    assert "shape mismatches" in message and "(64, 64) vs (768, 768)" in message


def test_full_size_checkpoints_are_told_apart(tmp_path):
    sam = build_sam("vit_b", device="meta").sam
    state = {key: torch.zeros(value.shape) if value.numel() < 2_000_000 else torch.zeros(1)
             for key, value in sam.state_dict().items()}
    path = tmp_path / "vit_b_like.pth"
    torch.save(state, path)
    with pytest.raises(CadbenchError, match="does not match backbone vit_l: .*missing keys"):
        build_sam("vit_l", checkpoint=path)


@pytest.mark.parametrize("content, expected", [
    (b"not a zip or pickle", "is not a PyTorch checkpoint"),
    (None, "is not a SAM state dict"),
])
def test_unusable_files_are_refused(tmp_path, content, expected):
    path = tmp_path / "bad.pth"
    if content is None:
        torch.save([torch.zeros(1)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(CadbenchError, match=expected) as error:
        build_sam("test_scale", checkpoint=path)
    assert "\n" not in str(error.value)


def test_arbitrary_pickles_are_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('executed')",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CadbenchError, match="weights-only"):
        build_sam("test_scale", checkpoint=path)


def test_missing_file(tmp_path):
    with pytest.raises(CadbenchError, match="does not exist"):
        build_sam("test_scale", checkpoint=tmp_path / "nope.pth")


def test_every_tensor_of_the_model_is_on_the_requested_device():
    """Meta's Sam creates its pixel statistics with a constructor that ignores the device context."""
    sam = build_sam("vit_b", device="meta").sam
    assert {tensor.device.type for tensor in [*sam.parameters(), *sam.buffers()]} == {"meta"}


def test_a_text_file_is_named_as_not_a_pytorch_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello world, these are notes\n")
    with pytest.raises(CadbenchError) as error:
        build_sam("test_scale", checkpoint=path)
    message = str(error.value)
    assert "is not a PyTorch checkpoint" in message and str(path) in message
    assert "\n" not in message and "101" not in message


class NotATensor:
    pass


@pytest.mark.parametrize("payload, culprit", [
    (lambda: {"x": NotATensor()}, "NotATensor"),
    (lambda: {"x": __import__("numpy").arange(3)}, "a pickled numpy."),
])
def test_a_pickled_object_is_refused_in_one_line_of_our_own_without_advice_to_drop_weights_only(
        tmp_path, payload, culprit):
    path = tmp_path / "objects.pth"
    torch.save(payload(), path)
    with pytest.raises(CadbenchError) as error:
        build_sam("test_scale", checkpoint=path)
    message = str(error.value)
    assert "\n" not in message and "\x1b" not in message
    assert culprit in message and "weights-only" in message
    assert "weights_only=False" not in message and "add_safe_globals" not in message


def test_a_damaged_archive_is_named_as_such(tmp_path, test_scale_checkpoint):
    path, _ = test_scale_checkpoint
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CadbenchError, match="damaged") as error:
        build_sam("test_scale", checkpoint=damaged)
    assert "\n" not in str(error.value)


def test_an_equals_sign_in_a_checkpoint_path_is_part_of_the_path(tmp_path, test_scale_checkpoint):
    from cadbench.api import resolve_checkpoints
    from cadbench.commands.arguments import checkpoint_argument

    path, _ = test_scale_checkpoint
    folder = tmp_path / "lr=1e-4"
    folder.mkdir()
    odd = folder / "run=3.pth"
    odd.write_bytes(path.read_bytes())
    assert checkpoint_argument(str(odd)) == str(odd)  # no backbone= item: one path, its = signs included
    assert resolve_checkpoints(checkpoint_argument(str(odd)), ["test_scale"]) == {"test_scale": str(odd)}
    assert checkpoint_argument(f"test_scale={odd}") == {"test_scale": str(odd)}
    assert resolve_checkpoints(checkpoint_argument(f"test_scale={odd}"), ["test_scale"]) == {"test_scale": str(odd)}
    with pytest.raises(CadbenchError, match="does not exist"):
        resolve_checkpoints(checkpoint_argument("vit_x=/nowhere.pth"), ["test_scale"])


@pytest.mark.parametrize("text, message", [
    ("test_scale=a.pth,,vit_b=b.pth", "empty item"),
    ("test_scale=a.pth,b.pth", "'b.pth' is not BACKBONE=PATH"),
])
def test_a_malformed_checkpoint_list_is_one_line(tmp_path, text, message):
    from cadbench.commands.arguments import checkpoint_argument

    with pytest.raises(CadbenchError, match=message) as error:
        checkpoint_argument(text)
    assert "\n" not in str(error.value)
