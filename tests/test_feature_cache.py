"""The frozen-feature cache of a fine-tune (cadbench.training.feature_cache): each image's frozen features computed
once, the fine-tune unchanged by it."""

import pytest
import torch

import cadbench.training.finetune as finetune
from cadbench.datasets import SyntheticCamouflage
from cadbench.training.feature_cache import FrozenFeatureCache, frozen_feature_cache
from cadbench.training.finetune import TrainingPlan, fine_tune
from cadbench.training.protocols import get_protocol
from cadbench.training.setup import prepare
from cadbench.training.weights import trainable_state


def fresh(method: str):
    torch.manual_seed(0)
    return prepare(method, "test_scale").method


def data(count: int = 3) -> SyntheticCamouflage:
    return SyntheticCamouflage("train", seed=0, image_size=128, count=count, height=40, width=52)


@pytest.mark.parametrize("method_name", ["decoder_only", "cad"])
def test_a_cached_fine_tune_trains_as_an_uncached_one(method_name, monkeypatch):
    plan = TrainingPlan.resolve(get_protocol("quick"), 1, "fp32", None, 6, seed=0)  # batch 1: each image 2 times
    served = []

    def counting(method, augmented):
        cache = FrozenFeatureCache(method)
        served.append(cache)
        return cache.installed()

    monkeypatch.setattr(finetune, "frozen_feature_cache", counting)
    cached_method = fresh(method_name)
    cached = fine_tune(cached_method, data(), plan)
    assert served[0].computed == 3 and served[0].served == 3  # 3 images, 6 steps: each computed once
    assert "frozen_features" not in cached_method.__dict__  # the method's own afterwards

    monkeypatch.setattr(finetune, "frozen_feature_cache", lambda method, augmented: FrozenFeatureCache(
        method, max_bytes=0).installed())  # nothing kept: every image computed every time
    uncached_method = fresh(method_name)
    uncached = fine_tune(uncached_method, data(), plan)
    assert cached.losses == pytest.approx(uncached.losses, rel=1e-5, abs=1e-6)
    for name, tensor in trainable_state(cached_method).items():
        torch.testing.assert_close(tensor, trainable_state(uncached_method)[name], rtol=1e-4, atol=1e-5)


def test_the_cache_serves_only_what_it_has_seen_and_stops_growing_at_its_limit():
    calls = []

    def compute(images):
        calls.append(len(images))
        return images.mean(dim=(2, 3), keepdim=True) * 2

    images = torch.arange(4 * 3 * 2 * 2, dtype=torch.float32).reshape(4, 3, 2, 2)
    cache = FrozenFeatureCache(method=None, max_bytes=2 * 3 * 4)  # room for the features of two images
    torch.testing.assert_close(cache(compute, images[:3]), compute(images[:3]))
    assert calls[-1] == 3 and len(cache.features) == 2
    torch.testing.assert_close(cache(compute, images), compute(images))
    assert calls[-2] == 2  # the third image (beyond the limit) and the fourth, computed; the first two served
    assert cache.served == 2


def test_no_cache_where_features_do_not_repeat():
    assert isinstance(frozen_feature_cache(fresh("lora"), augmented=False), type(frozen_feature_cache(
        fresh("lora"), augmented=True)))
    method = fresh("decoder_only")
    with frozen_feature_cache(method, augmented=True):
        assert "frozen_features" not in method.__dict__
    with frozen_feature_cache(method, augmented=False):
        assert "frozen_features" in method.__dict__
