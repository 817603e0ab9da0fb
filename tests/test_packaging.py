"""methods/ and datasets/ install under the cadbench namespace; third-party methods plug in by entry point."""

import subprocess
import sys
import zipfile
from pathlib import Path

import torch

from cadbench import registry
from cadbench.methods import Method

REPO = Path(__file__).resolve().parents[1]


def test_wheel_installs_plugins_under_the_cadbench_namespace_only(tmp_path):
    """A top-level `datasets` package would shadow Hugging Face's; the built wheel must hold only `cadbench`."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("cadbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"cadbench", next(n for n in top_level if n.endswith(".dist-info"))}, top_level
    for module in ("cadbench/methods/cad.py", "cadbench/methods/sam_adapter.py", "cadbench/datasets/__init__.py",
                   "cadbench/estimator/__init__.py", "cadbench/report/templates/report.html.j2"):
        assert module in names
    assert sum(name.startswith("cadbench/datasets/sample/") and name.endswith(".png") for name in names) >= 8
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "cadbench = cadbench.cli:main" in entry_points


class Tiny(Method):
    name = "tiny_plugin"
    summary = "a test plugin: decoder plus one scalar"

    def __init__(self, sam):
        super().__init__(sam)
        self.gain = torch.nn.Parameter(torch.ones(()))

    def image_embeddings(self, images):
        with torch.no_grad():
            embeddings = self.sam.image_encoder(self.normalize(images))
        return embeddings * self.gain


class FakeEntryPoint:
    def __init__(self, name, target):
        self.name, self.value, self._target = name, f"tests:{name}", target

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def test_entry_point_methods_are_found_and_broken_ones_reported(monkeypatch, capsys):
    points = [FakeEntryPoint("tiny_plugin", Tiny), FakeEntryPoint("broken", ImportError("no module named x")),
              FakeEntryPoint("cad", Tiny), FakeEntryPoint("not_a_method", object)]
    monkeypatch.setattr(registry, "entry_points", lambda group: points if group == registry.ENTRY_POINT_GROUP else [])
    registry.available_methods.cache_clear()
    try:
        methods = registry.available_methods()
        assert methods["tiny_plugin"] is Tiny
        assert methods["cad"].__name__ == "CAD"
        assert "broken" not in methods and "not_a_method" not in methods
        warnings = capsys.readouterr().err
        assert "'broken'" in warnings and "reuses built-in method name 'cad'" in warnings
        assert "'not_a_method'" in warnings

        from cadbench.datasets.batch import random_batch
        from cadbench.training.setup import prepare
        from cadbench.training.step import training_step
        trainee = prepare("tiny_plugin", "test_scale")
        gain_before = trainee.method.gain.detach().clone()
        training_step(trainee.method, trainee.optimizer, random_batch(128, 2))
        assert not torch.equal(trainee.method.gain, gain_before)
    finally:
        registry.available_methods.cache_clear()


def test_the_nuclei_sample_ships_in_the_wheel_and_is_found_by_importlib_resources_once_installed(tmp_path):
    """`--dataset nuclei-sample` reads two bundled files through importlib.resources: they must be package data of
    the installed package, with their attribution, not files that only a source checkout has."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheel"), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("cadbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("img2d.tif", "mask2d.tif", "README.md", "LICENSE-stardist.txt"):
        assert f"cadbench/datasets/nuclei/{name}" in names
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    probe = ("import cadbench.datasets.nuclei as n; print(n.__file__); "
             "print(n.bundled_file('img2d.tif')); print(all(n.file_sha256(k) == v for k, v in n.FILES.items()))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "PYTHONPATH": str(target)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    module, image, hashes_match = result.stdout.split()
    assert module.startswith(str(target)) and image.startswith(str(target)), result.stdout  # not the checkout
    assert hashes_match == "True"
