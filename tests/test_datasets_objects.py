"""Objects of a mask for --prompts-per-image N (datasets.objects): the label-image and connected-component rules,
the refusal of anti-aliased masks, seeded sampling of exactly N objects, and the synthetic object scenes."""

import numpy as np
import pytest
import torch
from PIL import Image

from cadbench.datasets import open_dataset
from cadbench.datasets.dataset import ALL_OBJECTS, PreparedDataset, collate, draw_numbers, images_with_objects
from cadbench.datasets.objects import NotObjectMask, choose_objects, label_objects, object_ids
from cadbench.datasets.synthetic import SyntheticCamouflage
from cadbench.errors import CadbenchError


def test_a_binary_mask_gives_its_8_connected_components():
    mask = np.zeros((10, 10), np.uint8)
    mask[1:3, 1:3] = 255  # one object
    mask[3, 3] = 255  # touches it diagonally: the same object under 8-connectivity
    mask[6:9, 6:9] = 255  # a second one
    labels = label_objects(mask)
    assert len(object_ids(labels)) == 2
    assert labels[1, 1] == labels[3, 3] != labels[7, 7]
    assert (labels == 0).sum() == (mask == 0).sum()


def test_a_label_image_gives_one_object_per_value_connected_or_not():
    labels_in = np.zeros((12, 12), np.int32)
    labels_in[0:4, 0:4] = 3
    labels_in[8:12, 8:12] = 3  # value 3 twice, apart: still one object
    labels_in[0:4, 8:12] = 7
    labels_in[5:8, 5:8] = 9
    labels = label_objects(labels_in)
    assert len(object_ids(labels)) == 3
    assert labels[0, 0] == labels[10, 10] and labels[0, 0] != labels[0, 10]


def test_an_anti_aliased_binary_mask_is_neither_binary_nor_a_label_image():
    mask = np.zeros((12, 12), np.uint8)
    mask[3:9, 3:9] = 255
    mask[2, 3:9] = 128  # grey only along the edges
    mask[9, 3:9] = 64
    with pytest.raises(NotObjectMask, match="only along edges"):
        label_objects(mask)


def test_exactly_n_objects_are_sampled_repeating_them_when_an_image_has_fewer():
    assert sorted(choose_objects(5, 3, seed=0)) == sorted(set(choose_objects(5, 3, seed=0)))  # distinct
    repeated = choose_objects(3, 8, seed=1)
    assert len(repeated) == 8 and set(repeated) == {0, 1, 2}
    assert max(np.bincount(repeated)) - min(np.bincount(repeated)) <= 1  # each repeated about as often
    assert choose_objects(3, 8, seed=1) == repeated  # seeded


def test_synthetic_object_scenes_hold_several_objects_and_some_none():
    data = SyntheticCamouflage("train", image_size=128, count=12, objects=True)
    counts = data.object_counts()
    assert counts.max() >= 2 and (counts == 0).any()
    assert data.empty_masks == int((counts == 0).sum())
    kept, skipped = images_with_objects(data)
    assert skipped == int((counts == 0).sum()) and len(kept) == 12 - skipped
    assert SyntheticCamouflage("train", image_size=128, count=2).load(0)[1].dtype == bool  # single-object set as was


def test_a_training_view_gives_exactly_n_objects_per_image_with_their_boxes():
    data, _ = images_with_objects(SyntheticCamouflage("train", image_size=128, count=8, objects=True))
    batch = collate([PreparedDataset(data, objects=6)[i] for i in range(3)])
    assert batch.masks.shape == (3, 6, 128, 128) and batch.boxes.shape == (3, 6, 4)
    training = batch.training_batch()
    assert training.boxes is batch.boxes
    for b in range(3):
        for k in range(6):  # each box (scaled from the stored mask) encloses its object's resized mask, to a pixel
            rows, cols = torch.nonzero(batch.masks[b, k], as_tuple=True)
            x0, y0, x1, y1 = batch.boxes[b, k].tolist()
            assert x0 - 1 <= cols.min() and cols.max() < x1 + 1 and y0 - 1 <= rows.min() and rows.max() < y1 + 1
            assert x1 - x0 < 128 / 2 and y1 - y0 < 128 / 2  # an object's box, not the image's
    scored = PreparedDataset(data, objects=ALL_OBJECTS)[0]
    assert scored.objects.count == data.object_counts()[0]
    assert scored.objects.original.shape[1:] == scored.original_mask.shape


def test_an_image_drawn_again_within_an_epoch_gets_its_own_objects_and_jitter_and_its_first_draw_is_as_before():
    """A step-counted round shows each image many times; each draw numbers past the end (`draw_numbers`) is the
    same image with its own seed, as micro-sam samples objects every iteration. First draws keep their index, so an
    epoch that shows each image once is unchanged."""
    assert draw_numbers([[0], [1], [0], [1], [0]], 2) == [[0], [1], [2], [3], [4]]
    assert draw_numbers([[1, 0], [0, 2], [2, 1]], 3) == [[1, 0], [3, 2], [5, 4]]
    assert draw_numbers([[2, 0], [1]], 3) == [[2, 0], [1]]  # each image once: the indices themselves
    assert draw_numbers([[0, 1], [2, 2]], 3) == [[0, 1], [2, 5]]  # a batch across two shuffled passes: two draws
    data, _ = images_with_objects(SyntheticCamouflage("train", image_size=128, count=8, objects=True))
    view = PreparedDataset(data, objects=2, seed=3, epoch=1)
    image = int(np.argmax(data.object_counts()))  # the image with the most objects: several ways to choose 2
    first, again = view[image], view[image + len(data)]
    assert torch.equal(first.image, again.image) and first.name == again.name
    assert not torch.equal(first.objects.boxes, again.objects.boxes)  # other objects, or other jitter
    assert torch.equal(first.objects.boxes, PreparedDataset(data, objects=2, seed=3, epoch=1)[image].objects.boxes)


def test_a_quick_fine_tune_draws_each_image_anew_at_every_step_of_a_round(monkeypatch):
    """50 steps over 2 images are 2 rounds of 25: every step of a round reads a draw of its own, never the same
    objects and jitter twice (the losses of a LiteMedSAM quick fine-tune fell to a twelfth while each of its two
    tiles repeated one set of 4 objects through the round, then jumped with the next round's)."""
    from cadbench.datasets.dataset import SubsetDataset
    from cadbench.training.finetune import TrainingPlan, fine_tune
    from cadbench.training.protocols import get_protocol
    from cadbench.training.setup import prepare

    scenes, _ = images_with_objects(SyntheticCamouflage("train", image_size=128, count=4, objects=True))
    data = SubsetDataset(scenes, [0, 1], "train", "two scenes with objects")  # rounds of 3 steps over 2 images
    read = []
    original = PreparedDataset.__getitem__

    def reading(self, index):
        read.append((self.epoch, index))
        return original(self, index)

    monkeypatch.setattr(PreparedDataset, "__getitem__", reading)
    torch.manual_seed(0)
    trainee = prepare("decoder_only", "test_scale")
    plan = TrainingPlan.resolve(get_protocol("quick"), 1, "fp32", None, 6, 0)
    fine_tune(trainee.method, data, plan, objects=2)
    assert len(read) == 6 and len(set(read)) == 6, read
    assert {index % len(data) for _, index in read} == set(range(len(data)))


def _folder(tmp_path, masks: dict[str, np.ndarray], mode: str = "L"):
    for name, mask in masks.items():
        (tmp_path / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*mask.shape, 3), 90, np.uint8)).save(tmp_path / "images" / f"{name}.png")
        Image.fromarray(mask, mode=mode if mask.dtype == np.uint8 else None).save(tmp_path / "masks" / f"{name}.png")
    return tmp_path


def test_folder_masks_are_read_for_their_objects_label_images_and_binary_ones(tmp_path):
    binary = np.zeros((20, 20), np.uint8)
    binary[2:6, 2:6] = binary[12:16, 12:16] = 255
    labelled = np.zeros((20, 20), np.uint16)
    labelled[0:5, 0:5], labelled[10:15, 0:5], labelled[10:15, 10:15] = 300, 301, 5000  # 16-bit labels, kept exact
    folder = _folder(tmp_path, {"a": binary})
    Image.fromarray(labelled).save(folder / "masks" / "b.png")
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(folder / "images" / "b.png")
    data = open_dataset(folder, None, image_size=128, objects=True)
    assert data.object_counts().tolist() == [2, 3]


def test_a_folder_mask_that_is_neither_binary_nor_a_label_image_is_refused_naming_it(tmp_path):
    mask = np.zeros((12, 12), np.uint8)
    mask[3:9, 3:9] = 255
    mask[2, 3:9] = 128
    folder = _folder(tmp_path, {"soft": mask})
    with pytest.raises(CadbenchError, match=r"mask .*soft\.png is neither binary nor a label image"):
        open_dataset(folder, None, image_size=128, objects=True)
    assert open_dataset(folder, None, image_size=128).empty_masks == 0  # the whole-image protocol reads it as before


def test_run_refuses_a_mask_that_is_neither_binary_nor_a_label_image_in_one_line_before_anything_runs(tmp_path):
    from cadbench_in_process import cadbench_main

    good = np.zeros((12, 12), np.uint8)
    good[3:9, 3:9] = 255
    soft = good.copy()
    soft[2, 3:9] = 128
    folder = _folder(tmp_path / "data", {"a": good, "b": good, "soft": soft})
    out = tmp_path / "out"
    result = cadbench_main("run", "--methods", "decoder_only", "--backbone", "test_scale", "--batch-sizes", "1",
                           "--device", "cpu", "--prompts-per-image", "2", "--dataset", folder, "--out", out,
                           "--no-progress")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "soft.png is neither binary nor a label image" in result.stderr
    assert not out.exists()
