"""The SMPL and MANO mesh data files FastMETRO needs, found, fetched and read safely.

Files (published in the official FastMETRO repository, src/modeling/data/, MIT license):
  mesh_downsampling.npz        upsampling 1723 -> 6890 (U[0]), the faces of both meshes (F[0], F[1]) and
                               downsampling 6890 -> 1723 (D[0], for quick drawing)
  smpl_431_adjmat_*.pt         431-vertex adjacency: the decoder's vertex-vertex attention mask
  J_regressor_h36m_correct.npy 17 x 6890 regressor of the Human3.6M joints
and for the hand network (MANO right-hand mesh):
  mano_downsampling.npz        upsampling 195 -> 778 (U[0]) and the faces of the 778-vertex mesh (F[0])
  mano_195_adjmat_*.pt         195-vertex adjacency: the hand decoder's attention mask

Where they are looked up, in order:
  1. the directory passed in (config `infer.assets_dir`, `--assets DIR`),
  2. the directory in the environment variable FASTMETRO_ASSETS (for the MANO files first
     FASTMETRO_MANO_ASSETS, so SMPL and MANO copies may live in different directories),
  3. the user cache, $XDG_CACHE_HOME/fastmetro-stream/assets (default ~/.cache/...),
  and if a file is still missing it is downloaded into the cache from the official repository and
  checked against the SHA-256 pinned below.

mesh_downsampling.npz stores its matrices as pickled Python objects. We never let it run arbitrary
pickle code: `_RestrictedUnpickler` admits only the numpy and scipy classes those arrays are made of
and refuses everything else (the file's entry `M` holds objects of an unrelated class and is not read).
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import numpy as np

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

OFFICIAL_BASE_URL = "https://raw.githubusercontent.com/postech-ami/FastMETRO/main/src/modeling/data/"
ENV_ASSETS = "FASTMETRO_ASSETS"
ENV_MANO_ASSETS = "FASTMETRO_MANO_ASSETS"

# SHA-256 of the files at the official repository's commit c5ae2069 (2024-07-21).
ASSET_SHA256 = {
    "mesh_downsampling.npz": "5683b656d9acd7f1558db832527beb0cc6b3b45388cf41a7979dab52e2c57477",
    "smpl_431_adjmat_indices.pt": "6cd71fd5e0ed2c55b909fad982a80fe3a0ddaf6e203721e030c9ea0246891f73",
    "smpl_431_adjmat_values.pt": "0d098729e4bc1bdc21545ff99cbe0560c44210a38ff43db7b2858dbfa03e3073",
    "smpl_431_adjmat_size.pt": "f2b87183ef2493228e014b5e725f59755a2c75f034684f7cca72c34f7a9d0ae0",
    "J_regressor_h36m_correct.npy": "1835d64133d5f66bd80a814ab1c1dc0900ef01950f568320acf5f9390c1f2c8c",
}
MANO_SHA256 = {
    "mano_downsampling.npz": "db2b23b0ede7c34039f1d8960e2e839552e0f58d4b34a8612b4065d8a47f9c80",
    "mano_195_adjmat_indices.pt": "f99d80a96bbced27df6b6dee4fbdc01ee326e7e2691a79ca596ad03f57db8a6a",
    "mano_195_adjmat_values.pt": "29945bf3dce6ce679fc6b35ed9007aa531f68e6e2e44a59d5ab69a643862f8f9",
    "mano_195_adjmat_size.pt": "cd137f9f2b1b8827251934784326a5b05f1415333101c13c849ed6b5eba6c3a4",
}

PathLike = Union[str, os.PathLike]


class AssetError(RuntimeError):
    """A mesh data file is missing, corrupt or cannot be fetched."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastmetro-stream"


def sha256_of(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: Optional[str] = None, desc: Optional[str] = None,
             check: Optional[Callable[[Path], None]] = None) -> Path:
    """Download url to dest atomically (temporary file, then rename), checking sha256 if given and
    `check(tmp_path)` (raises AssetError, e.g. for an HTML page where a file was expected) before the
    file takes its name: a bad download never lands in the cache."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s -> %s", url, dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            req = urllib.request.Request(url, headers={"User-Agent": "fastmetro-stream"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                total = int(resp.headers.get("Content-Length") or 0) or None
                from rich.progress import Progress

                with Progress(transient=True) as bar:
                    task = bar.add_task(desc or dest.name, total=total)
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
                        bar.advance(task, len(chunk))
        if sha256 is not None:
            got = sha256_of(tmp)
            if got != sha256:
                raise AssetError(f"{url}: SHA-256 {got} does not match the pinned {sha256}")
        if check is not None:
            check(Path(tmp))
        os.replace(tmp, dest)
    except AssetError:
        raise
    except Exception as e:  # network errors of every kind
        raise AssetError(f"could not download {url}: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def find_asset(name: str, assets_dir: Optional[PathLike] = None, fetch: bool = True) -> Path:
    """Path of one mesh data file, downloading it into the cache if it is found nowhere."""
    searched = []
    envs = (ENV_MANO_ASSETS, ENV_ASSETS) if name in MANO_SHA256 else (ENV_ASSETS,)
    for d in (assets_dir, *(os.environ.get(e) for e in envs), cache_dir() / "assets"):
        if not d:
            continue
        p = Path(d).expanduser() / name
        searched.append(str(p.parent))
        if p.is_file():
            return p
    dest = cache_dir() / "assets" / name
    hint = (
        f"mesh data file {name} not found (looked in: {', '.join(searched)}). Download it from "
        f"{OFFICIAL_BASE_URL}{name} into one of those directories, or point {envs[0]} at a "
        f"directory holding it."
    )
    if not fetch:
        raise AssetError(hint)
    try:
        return download(OFFICIAL_BASE_URL + name, dest, ASSET_SHA256.get(name) or MANO_SHA256.get(name))
    except AssetError as e:
        raise AssetError(f"{hint}\n  download failed: {e}") from e


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and scipy CSC matrices, and nothing else."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("scipy.sparse.csc", "csc_matrix"),
        ("scipy.sparse._csc", "csc_matrix"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} (not an array type)")
        if module.startswith("numpy"):
            if name == "_reconstruct":
                try:
                    from numpy._core.multiarray import _reconstruct as f
                except ImportError:  # numpy < 2
                    from numpy.core.multiarray import _reconstruct as f
                return f
            return getattr(np, name)
        import scipy.sparse

        return scipy.sparse.csc_matrix


def _read_pickled_npy(data: bytes):
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        np.lib.format.read_array_header_1_0(f)
    else:
        np.lib.format.read_array_header_2_0(f)
    return _RestrictedUnpickler(f, encoding="latin1").load()


# The official file's members are under 1 MB each (A.npy, the largest, 0.7 MB) and its meshes have 6,890
# vertices at most: anything much larger is refused before it is decompressed or allocated (a 2 MB
# zip bomb otherwise made every stage that loads the mesh allocate gigabytes).
MAX_NPZ_MEMBER_BYTES = 32 * 1024 * 1024
MAX_MESH_SIDE = 100_000


def read_mesh_downsampling(path: PathLike) -> dict[str, list]:
    """A, U, D (scipy sparse) and F (int arrays) of mesh_downsampling.npz (or mano_downsampling.npz),
    without arbitrary pickles, without decompressing a member over MAX_NPZ_MEMBER_BYTES, and refusing
    absurd matrix shapes."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for key in ("A", "U", "D", "F"):
                info = z.getinfo(key + ".npy")
                if info.file_size > MAX_NPZ_MEMBER_BYTES:  # zipfile reads no more than this declared size
                    raise ValueError(f"{key}.npy unpacks to {info.file_size} bytes (at most "
                                     f"{MAX_NPZ_MEMBER_BYTES} expected): not the mesh data file")
                out[key] = list(_read_pickled_npy(z.read(info)))
                for m in out[key]:
                    shape = getattr(m, "shape", ())
                    if len(shape) > 2 or any(not 0 <= int(n) <= MAX_MESH_SIDE for n in shape):
                        raise ValueError(f"{key}.npy holds a matrix of shape {shape}: not the mesh data file")
    except (zipfile.BadZipFile, KeyError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise AssetError(f"{path} is not a valid {Path(path).name}: {e}") from e
    return out


@dataclass(frozen=True)
class SparseRows:
    """A sparse matrix (rows x cols) stored as a fixed number of (column, weight) pairs per row.

    y = M @ x becomes (x[cols] * weights).sum(1): dense gathers, batched, any device and dtype.
    Rows with fewer entries are padded with column 0 and weight 0.
    """

    cols: torch.Tensor  # (rows, k) int64
    weights: torch.Tensor  # (rows, k) float32
    shape: tuple[int, int]

    @classmethod
    def from_scipy(cls, m) -> "SparseRows":
        import torch

        m = m.tocsr()
        m.sum_duplicates()
        counts = np.diff(m.indptr)
        k = int(counts.max())
        rows = m.shape[0]
        cols = np.zeros((rows, k), dtype=np.int64)
        weights = np.zeros((rows, k), dtype=np.float32)
        slot = np.arange(m.nnz) - np.repeat(m.indptr[:-1], counts)
        row_of = np.repeat(np.arange(rows), counts)
        cols[row_of, slot] = m.indices
        weights[row_of, slot] = m.data
        return cls(torch.from_numpy(cols), torch.from_numpy(weights), tuple(m.shape))


@dataclass(frozen=True)
class MeshData:
    """Everything the body network and its consumers need from the mesh data files."""

    upsample: SparseRows  # 6890 x 1723, intermediate -> fine mesh (U[0])
    adjacency_431: torch.Tensor  # (431, 431) bool, with self loops
    faces: np.ndarray  # (13776, 3) int64 triangles of the 6890-vertex mesh
    j_regressor_h36m: np.ndarray  # (17, 6890) float32
    source: str  # where the files were found
    coarse_faces: np.ndarray  # (3442, 3) int64 triangles of the 1723-vertex mesh (F[1]), for quick drawing
    downsample: Any  # scipy sparse (1723, 6890): fine -> 1723-vertex mesh (D[0]); coarse = downsample @ fine


def _read_adjacency(prefix: str, assets_dir: Optional[PathLike]) -> torch.Tensor:
    """The (n, n) bool adjacency (self loops included) from the official {prefix}_{indices,values,size}.pt."""
    import torch

    parts = {}
    for part in ("indices", "values", "size"):
        path = find_asset(f"{prefix}_{part}.pt", assets_dir)
        try:
            parts[part] = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise AssetError(f"{path} could not be read: {e}") from e
    return torch.sparse_coo_tensor(parts["indices"], parts["values"], size=tuple(parts["size"]),
                                   check_invariants=True).to_dense() != 0


@lru_cache(maxsize=4)
def _load_mesh_data(assets_dir: Optional[str]) -> MeshData:
    import torch

    ds = read_mesh_downsampling(find_asset("mesh_downsampling.npz", assets_dir))
    up = ds["U"][0]
    if up.shape != (6890, 1723):
        raise AssetError(f"mesh_downsampling.npz: U[0] has shape {up.shape}, expected (6890, 1723)")
    adj = _read_adjacency("smpl_431_adjmat", assets_dir)
    reg_path = find_asset("J_regressor_h36m_correct.npy", assets_dir)
    try:
        reg = np.load(reg_path, allow_pickle=False).astype(np.float32)
    except Exception as e:
        raise AssetError(f"{reg_path} could not be read: {e}") from e
    return MeshData(
        upsample=SparseRows.from_scipy(up),
        adjacency_431=adj,
        faces=np.asarray(ds["F"][0], dtype=np.int64),
        j_regressor_h36m=reg,
        source=str(reg_path.parent),
        coarse_faces=np.asarray(ds["F"][1], dtype=np.int64),
        downsample=ds["D"][0].tocsr(),
    )


def load_mesh_data(assets_dir: Optional[PathLike] = None) -> MeshData:
    """Load (and cache per directory) the SMPL mesh data; see the module docstring for the lookup."""
    return _load_mesh_data(str(assets_dir) if assets_dir else None)


@dataclass(frozen=True)
class MeshFaces:
    """The triangles of the meshes, for processes that publish or draw them: read without torch."""

    faces: np.ndarray  # (13776, 3) int64 triangles of the 6890-vertex mesh
    coarse_faces: np.ndarray  # (3442, 3) int64 triangles of the 1723-vertex mesh (F[1])
    downsample: Any  # scipy sparse (1723, 6890): fine -> 1723-vertex mesh (D[0])


@lru_cache(maxsize=4)
def _load_mesh_faces(assets_dir: Optional[str]) -> MeshFaces:
    ds = read_mesh_downsampling(find_asset("mesh_downsampling.npz", assets_dir))
    return MeshFaces(faces=np.asarray(ds["F"][0], dtype=np.int64), coarse_faces=np.asarray(ds["F"][1], dtype=np.int64),
                     downsample=ds["D"][0].tocsr())


def load_mesh_faces(assets_dir: Optional[PathLike] = None) -> MeshFaces:
    """The faces (and the fine -> coarse downsampling) alone, from mesh_downsampling.npz: no torch imported,
    the same arrays as load_mesh_data's."""
    return _load_mesh_faces(str(assets_dir) if assets_dir else None)


@dataclass(frozen=True)
class HandMeshData:
    """What the hand network and its consumers need from the MANO mesh data files."""

    upsample: SparseRows  # 778 x 195, coarse -> fine MANO mesh (U[0] of mano_downsampling.npz)
    adjacency_195: torch.Tensor  # (195, 195) bool, with self loops
    faces: np.ndarray  # (1538, 3) int64 triangles of the 778-vertex right-hand mesh (F[0])
    source: str  # where the files were found


@lru_cache(maxsize=4)
def _load_hand_mesh_data(assets_dir: Optional[str]) -> HandMeshData:
    path = find_asset("mano_downsampling.npz", assets_dir)
    ds = read_mesh_downsampling(path)
    up = ds["U"][0]
    if up.shape != (778, 195):
        raise AssetError(f"{path}: U[0] has shape {up.shape}, expected (778, 195)")
    adj = _read_adjacency("mano_195_adjmat", assets_dir)
    if adj.shape != (195, 195):
        raise AssetError(f"mano_195_adjmat_*.pt: adjacency of shape {tuple(adj.shape)}, expected (195, 195)")
    return HandMeshData(upsample=SparseRows.from_scipy(up), adjacency_195=adj,
                        faces=np.asarray(ds["F"][0], dtype=np.int64), source=str(path.parent))


def load_hand_mesh_data(assets_dir: Optional[PathLike] = None) -> HandMeshData:
    """Load (and cache per directory) the MANO mesh data; see the module docstring for the lookup."""
    return _load_hand_mesh_data(str(assets_dir) if assets_dir else None)


@lru_cache(maxsize=4)
def _load_hand_faces(assets_dir: Optional[str]) -> np.ndarray:
    return np.asarray(read_mesh_downsampling(find_asset("mano_downsampling.npz", assets_dir))["F"][0], dtype=np.int64)


def load_hand_faces(assets_dir: Optional[PathLike] = None) -> np.ndarray:
    """The (1538, 3) triangles of the right-hand MANO mesh alone (load_hand_mesh_data's faces), no torch."""
    return _load_hand_faces(str(assets_dir) if assets_dir else None)


def copy_assets(src: PathLike, dst: Optional[PathLike] = None) -> Path:
    """Copy the mesh data files from a directory into the user cache (for offline machines): every SMPL
    file, and the MANO files too where src holds them."""
    dst = Path(dst) if dst else cache_dir() / "assets"
    dst.mkdir(parents=True, exist_ok=True)
    for name in ASSET_SHA256:
        shutil.copy2(Path(src) / name, dst / name)
    for name in MANO_SHA256:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, dst / name)
    return dst
