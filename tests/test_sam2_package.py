"""The `sam2` extra: the installed files cadbench builds SAM 2.1 from are Meta's own (repository facebookresearch/sam2
at commit 2b90b9f), and the sdist's top-level `training` package cannot stand in for cadbench's. The hash check is
skipped only where the `sam2` extra is not installed; the shadowing checks run everywhere."""

import ast
import hashlib
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from cadbench.families import sam2 as sam2_family

REPO = Path(__file__).resolve().parents[1]
needs_extra = pytest.mark.skipif(sam2_family.missing_requirement() is not None,
                                 reason=f"the sam2 extra is not installed: {sam2_family.EXTRA}")


@needs_extra
def test_every_sam2_file_cadbench_uses_is_byte_identical_to_metas_commit_2b90b9f():
    differing = {}
    for relative, expected in sam2_family.META_FILES_SHA256.items():
        found = hashlib.sha256(sam2_family.package_file(relative).read_bytes()).hexdigest()
        if found != expected:
            differing[relative] = found
    assert differing == {}, f"not Meta's file at {sam2_family.META_COMMIT}: {sorted(differing)}"


@needs_extra
def test_the_hash_list_covers_every_sam2_module_cadbench_imports_when_it_builds_a_model():
    """Each `sam2` module loaded by building SAM 2.1 through Meta's builder (and its image predictor, which the
    faithfulness tests compare with) is in the hash list: a module outside it would be trusted unchecked."""
    code = ("import sys\n"
            "from sam2.build_sam import build_sam2\n"
            "import sam2.sam2_image_predictor\n"
            "build_sam2('configs/sam2.1/sam2.1_hiera_t.yaml', device='cpu')\n"
            "print('\\n'.join(sorted(m.__file__ for n, m in sys.modules.items()\n"
            "      if (n == 'sam2' or n.startswith('sam2.')) and getattr(m, '__file__', None))))\n")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=REPO / "tests").stdout.split()
    root = sam2_family.package_file("")
    relative = {str(Path(path).relative_to(root)) for path in loaded}
    assert relative and relative <= set(sam2_family.META_FILES_SHA256), sorted(relative - set(
        sam2_family.META_FILES_SHA256))


def _bare_training_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "training"]
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "training":
            found.append(node.module)
    return found


def test_no_cadbench_source_imports_a_bare_top_level_training_package():
    """The sam2 sdist installs Meta's training code as a top-level `training`: cadbench's is `cadbench.training`,
    always imported by that name (absolute imports; a relative `from . import` is resolved inside cadbench)."""
    offenders = {str(path.relative_to(REPO)): names
                 for folder in ("cadbench", "methods", "datasets")
                 for path in sorted((REPO / folder).rglob("*.py"))
                 if (names := _bare_training_imports(path))}
    assert offenders == {}


def test_cadbenchs_training_modules_resolve_inside_the_cadbench_package_even_beside_a_top_level_training(tmp_path):
    """With a top-level `training` package first on the path (as the sam2 sdist installs one), every module of
    cadbench's training package still comes from cadbench, and the top-level one is a different package."""
    impostor = tmp_path / "training"
    impostor.mkdir()
    (impostor / "__init__.py").write_text("IMPOSTOR = True\n")
    (impostor / "step.py").write_text("raise ImportError('the top-level training package was imported')\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "import pkgutil, importlib, training\n"
            "import cadbench.training as own\n"
            "names = [m.name for m in pkgutil.walk_packages(own.__path__, 'cadbench.training.')]\n"
            "files = [importlib.import_module(n).__file__ for n in ['cadbench.training', *names]]\n"
            "assert getattr(training, 'IMPOSTOR', False)\n"
            "print(len(files)); print('\\n'.join(files))\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                            cwd=REPO / "tests")
    assert result.returncode == 0, result.stderr
    count, *files = result.stdout.split()
    package = Path(importlib.util.find_spec("cadbench").submodule_search_locations[0]).resolve()
    assert int(count) == len(files) > 10
    assert all(Path(file).resolve().is_relative_to(package / "training") for file in files), files


@needs_extra
def test_the_installed_sam2_sdist_does_ship_a_top_level_training_package_that_is_not_cadbenchs():
    """The risk the two tests above guard against is real where the extra is installed."""
    spec = importlib.util.find_spec("training")
    assert spec is not None and spec.origin is not None
    assert not Path(spec.origin).resolve().is_relative_to(REPO / "cadbench")
    assert importlib.import_module("cadbench.training").__name__ == "cadbench.training"
