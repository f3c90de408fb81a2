"""Hostile mesh data files: a zip bomb is refused before it is decompressed, a pickle that is not an
array is refused, and the publish stage reports either in one line (a StageError), not a traceback."""
from __future__ import annotations

import io
import pickle
import shutil
import tracemalloc
import zipfile

import numpy as np
import pytest

from fastmetro.assets import AssetError, read_mesh_downsampling
from pipeline.stage import StageContext, StageError
from stages.publish import PublishConfig, PublishStage


@pytest.fixture
def bomb(tmp_path, assets_dir):
    """mesh_downsampling.npz whose A.npy unpacks to 300 MB of zeros (0.3 MB packed)."""
    path = tmp_path / "mesh_downsampling.npz"
    src = zipfile.ZipFile(assets_dir / "mesh_downsampling.npz")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("A.npy", "w", force_zip64=True) as f:
            chunk = bytes(1 << 20)
            for _ in range(300):
                f.write(chunk)
        for name in ("U.npy", "D.npy", "F.npy", "M.npy"):
            z.writestr(name, src.read(name))
    return path


def test_a_zip_bomb_is_refused_before_it_is_decompressed(bomb):
    assert bomb.stat().st_size < 2_000_000
    tracemalloc.start()
    with pytest.raises(AssetError, match="unpacks to"):
        read_mesh_downsampling(bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6, f"{peak / 1e6:.0f} MB allocated before refusing"


def test_an_absurd_matrix_shape_is_refused(tmp_path, assets_dir):
    import scipy.sparse

    path = tmp_path / "mesh_downsampling.npz"
    src = zipfile.ZipFile(assets_dir / "mesh_downsampling.npz")
    huge = scipy.sparse.csc_matrix((1, 1))
    huge._shape = (10**10, 1)  # converting it to CSR would allocate 80 GB of row pointers
    buf = io.BytesIO()
    np.save(buf, np.array([huge, huge], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "w") as z:
        for name in ("A.npy", "U.npy", "F.npy", "M.npy"):
            z.writestr(name, src.read(name))
        z.writestr("D.npy", buf.getvalue())
    with pytest.raises(AssetError, match="shape"):
        read_mesh_downsampling(path)


def test_publish_names_a_refused_asset_file_in_one_line(bomb, assets_dir, tmp_path):
    d = bomb.parent
    for name in ("smpl_431_adjmat_indices.pt", "smpl_431_adjmat_values.pt", "smpl_431_adjmat_size.pt",
                 "J_regressor_h36m_correct.npy"):
        shutil.copy(assets_dir / name, d / name)
    stage = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:*"), StageContext(assets_dir=str(d)))
    with pytest.raises(StageError, match="mesh_downsampling"):
        stage.setup()
    stage.close()
