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
    (b"not a zip or pickle", "could not be loaded"),
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
