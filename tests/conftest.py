"""Test settings shared by every test module.

The SMPL mesh data files (mesh_downsampling.npz, smpl_431_adjmat_*.pt, J_regressor_h36m_correct.npy) are
not part of the project: users download them (fastmetro.assets does it) and tests read a local copy.
FASTMETRO_ASSETS names that directory; by default the copy beside the checkout (../shared/assets/smpl).
The MANO files of the hand network (mano_downsampling.npz, mano_195_adjmat_*.pt) likewise:
FASTMETRO_MANO_ASSETS, by default ../shared/assets/mano.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_default_assets = REPO.parent / "shared" / "assets" / "smpl"
if "FASTMETRO_ASSETS" not in os.environ and _default_assets.is_dir():
    os.environ["FASTMETRO_ASSETS"] = str(_default_assets)
_default_mano = REPO.parent / "shared" / "assets" / "mano"
if "FASTMETRO_MANO_ASSETS" not in os.environ and _default_mano.is_dir():
    os.environ["FASTMETRO_MANO_ASSETS"] = str(_default_mano)
# Tests run the exact eager engine unless they set infer.engine themselves: `auto` measures every engine at
# its first run on a machine (minutes), which tests/test_engine_auto.py covers on its own.
os.environ.setdefault("FASTMETRO_ENGINE", "manual")
PARITY_DIR = Path(os.environ.get("FASTMETRO_PARITY", REPO.parent / "shared" / "fixtures" / "parity"))


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    path = os.environ.get("FASTMETRO_ASSETS")
    if not path or not Path(path).is_dir():
        pytest.skip("SMPL mesh data files not found: set FASTMETRO_ASSETS to a directory holding them")
    return Path(path)


@pytest.fixture(scope="session")
def mano_dir() -> Path:
    path = os.environ.get("FASTMETRO_MANO_ASSETS")
    if not path or not Path(path).is_dir():
        pytest.skip("MANO mesh data files not found: set FASTMETRO_MANO_ASSETS to a directory holding them")
    return Path(path)


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not PARITY_DIR.is_dir():
        pytest.skip(f"parity fixtures not found at {PARITY_DIR} (set FASTMETRO_PARITY)")
    return PARITY_DIR


@pytest.fixture(scope="module")
def user_cache(tmp_path_factory):
    """A fresh user cache for one test module (XDG_CACHE_HOME pointed at a new folder): yields the project's
    cache directory in it, fastmetro.assets.cache_dir()."""
    import fastmetro.assets

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield fastmetro.assets.cache_dir()


@pytest.fixture(scope="module")
def template(assets_dir):
    """The SMPL template posed by the humanoid solver's conventions (tests.humanoid_data.PosedTemplate)."""
    from tests.humanoid_data import PosedTemplate

    return PosedTemplate(assets_dir)


@pytest.fixture(scope="module")
def hands(mano_dir):
    """The MANO hand of each side, posed by the finger solver's conventions (tests.hand_data.PosedHand)."""
    from fastmetro.humanoid_hands import SIDES
    from tests.hand_data import PosedHand

    return {side: PosedHand(mano_dir, side) for side in SIDES}
