"""SAM 2.1 (Meta, facebookresearch/sam2): the package cadbench builds it from, and the files it checks.

Meta publishes SAM 2 only on GitHub (the package `SAM-2` 1.0). The only PyPI upload, `sam2` 1.1.0, is a third
party's sdist (sha256 7e0ea252d43c10d853e3acfce0b5770ac683c30481bd6de311300e9d44f45b74) whose `setup.py` names
another author and URL; every file cadbench uses in it is byte-identical to Meta's repository at commit
2b90b9f5ceec907a1c18123530e92e794ad901a4 (2024-12-15), which `META_FILES_SHA256` records and a test checks on the
installed package. (The sdist's `sam2/sam2_hiera_*.yaml` are real files where Meta's repository has symbolic links
to `configs/sam2/`; cadbench reads neither.) The sdist also installs a top-level `training` package (Meta's training
code); cadbench never imports a bare `training` (its own is `cadbench.training`), which a test checks.

The package is an optional extra: its build imports torch (so it is built without isolation, after torch is
installed) and compiles a CUDA extension unless `SAM2_BUILD_CUDA=0` (cadbench needs none of it: the extension only
post-processes masks), and it pulls in hydra-core and iopath, which nothing else needs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "sam2"
EXTRA = 'SAM2_BUILD_CUDA=0 pip install --no-build-isolation "cadbench[sam2]" (after torch)'
META_REPOSITORY = "facebookresearch/sam2"
META_COMMIT = "2b90b9f5ceec907a1c18123530e92e794ad901a4"
# sha256 of each file of the `sam2` package that cadbench builds from or compares with, as Meta's repository has it
# at META_COMMIT (`git show 2b90b9f5...:sam2/<path> | sha256sum`), by its path inside the package.
META_FILES_SHA256 = {
    "__init__.py": "b87ca1e95cd54b81766e8c74acf0e937952639529e40d2b4088693286f49419e",
    "build_sam.py": "856d64d71e44407401297b551884fb4cd1aba8082de0ff5fc60fac3dd42f094d",
    "sam2_image_predictor.py": "f13e5f9d94e5c8d9d2c3622dab20c8f334c089ef2ee5ea8e199da7d332b029ba",
    "utils/__init__.py": "34bd8069c54764e7b8d73a78905dbe6467140a2f73170875128f6ca4d8cdd0aa",
    "utils/misc.py": "01600c01c161cd079d7106fb1d4da845cf91aa31ab2bcecaf8cb151b6d6d20a2",
    "utils/transforms.py": "ba3a64f4600c62f209206a6df3b40e3fcf133edae32fad658831bb0c2a6d1146",
    "configs/sam2.1/sam2.1_hiera_b+.yaml": "37d6c56b07a7f8d08baaa314315c60dc3aabe2edc66cd92bac6d1ed50038e788",
    "configs/sam2.1/sam2.1_hiera_l.yaml": "1dbd6cb6dfebeaf588c7006ee222c6efbfa9049a7ad472a3cdfb2f5d919e8107",
    "configs/sam2.1/sam2.1_hiera_s.yaml": "0f36b91e86e58d06c87e42997166212468b88b98b60e4d816d5e4d4d088b6f55",
    "configs/sam2.1/sam2.1_hiera_t.yaml": "f932eac1c6241e910031b2f000a81cd9f8a8d4896e2277ab5ffb721f378b188d",
    "modeling/__init__.py": "34bd8069c54764e7b8d73a78905dbe6467140a2f73170875128f6ca4d8cdd0aa",
    "modeling/backbones/__init__.py": "34bd8069c54764e7b8d73a78905dbe6467140a2f73170875128f6ca4d8cdd0aa",
    "modeling/backbones/hieradet.py": "03785581ca304d0451ae0df7a08ee0bf1e1dbe66fad285066e6b9ffc0d88d64f",
    "modeling/backbones/image_encoder.py": "16eaad232220386f510ca8dfab8655e63699977149a4daf9ce9c6f374e6777a9",
    "modeling/backbones/utils.py": "c4a0657db2a92bda2a7ff116cd4017f6b1c59af6408093d8874eb08a0df476ad",
    "modeling/memory_attention.py": "07358cb7f58ec3788e88ff4e6415f8a9d628a3963529d6e2c915494a5347c8e2",
    "modeling/memory_encoder.py": "73f7089ae5fdacdfcaaf3deca1ca6d9f84d89e7deb9cf97589622a9ef17ba42f",
    "modeling/position_encoding.py": "b51404718c0d38f381293c8e5e00a15d129651b7f09b1158002d8974a30967b5",
    "modeling/sam/__init__.py": "34bd8069c54764e7b8d73a78905dbe6467140a2f73170875128f6ca4d8cdd0aa",
    "modeling/sam/mask_decoder.py": "ca3523c58365574faddf1bfb54f374e4b4beba05127185ea2b17d22b916e099a",
    "modeling/sam/prompt_encoder.py": "4965ccb4a4504aa4d7246b2ad66ffeacd2626415c86a261dc1c65ffd8ae1d40d",
    "modeling/sam/transformer.py": "cda19052331e775190ce8b1159efcb828a4632d931a6d8bd4d47109f121782f1",
    "modeling/sam2_base.py": "69a46b44e8625f509791352bd09beaafe589cd7d872721384e63d37f9fdc6e41",
    "modeling/sam2_utils.py": "e35bbf13bc2e544a0272cd3f9539af38a752676ac3cd744be31cd8220afee804",
}


def missing_requirement() -> str | None:
    """Why SAM 2 cannot be built here (its package is not installed), or None."""
    if importlib.util.find_spec(PACKAGE) is None:
        return f"needs Meta's SAM 2 package: {EXTRA}"
    return None


def package_file(relative: str) -> Path:
    """A file of the installed `sam2` package (found without importing it: its import initialises hydra)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the {PACKAGE} package is not installed ({EXTRA})")
    return Path(next(iter(spec.submodule_search_locations))) / relative
