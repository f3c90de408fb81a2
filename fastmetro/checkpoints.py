"""The official FastMETRO checkpoints: a registry, download, and safe loading.

The official files are plain state_dicts saved with torch.save(model.state_dict(), ...). They load
here with torch.load(weights_only=True) (no pickled code runs) into a model of the matching variant,
strictly: every key must match. The variant can be read off the keys, so a file is checked before a
model is built for it, and a wrong file is a clear error naming the variant that would fit.
"""
from __future__ import annotations

import logging
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from .assets import AssetError, cache_dir, download
from .model import VARIANTS, Variant, get_variant

log = logging.getLogger(__name__)

ENV_CHECKPOINTS = "FASTMETRO_CHECKPOINTS"
DOWNLOAD_DOC = "https://github.com/postech-ami/FastMETRO/blob/main/docs/Download.md"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or does not fit the model."""


def _drive(file_id: str) -> str:
    return f"https://drive.google.com/u/2/uc?id={file_id}&export=download&confirm=t"


@dataclass(frozen=True)
class Checkpoint:
    """One official released file (docs/Download.md of the official repository)."""

    name: str  # what users type, e.g. "fastmetro-s-r50-h36m"
    variant: str
    filename: str
    url: str
    dataset: str
    pa_mpjpe_mm: float  # published PA-MPJPE on `dataset`


CHECKPOINTS: dict[str, Checkpoint] = {
    c.name: c
    for c in [
        Checkpoint("fastmetro-s-r50-h36m", "fastmetro-s-r50", "FastMETRO-S-R50_h36m_state_dict.bin",
                   _drive("1v61B2ewify6zAedQHo8vXOhdzckKl3hT"), "Human3.6M", 38.8),
        Checkpoint("fastmetro-s-r50-3dpw", "fastmetro-s-r50", "FastMETRO-S-R50_3dpw_state_dict.bin",
                   _drive("1tk5evwX8GHV1uckVQcmMB_Lhu_RZkf0I"), "3DPW", 49.1),
        Checkpoint("fastmetro-l-h64-h36m", "fastmetro-l-h64", "FastMETRO-L-H64_h36m_state_dict.bin",
                   _drive("1WU6q27SV7YNGCSBLypB5IGFVWMnL26io"), "Human3.6M", 33.6),
        Checkpoint("fastmetro-l-h64-3dpw", "fastmetro-l-h64", "FastMETRO-L-H64_3dpw_state_dict.bin",
                   _drive("19Nc-KyluAB4UmY70HoBvIRqwRFVy4jQB"), "3DPW", 44.6),
        Checkpoint("fastmetro-l-h64-smpl-h36m", "fastmetro-l-h64-smpl",
                   "FastMETRO-L-H64_smpl_h36m_state_dict.bin",
                   _drive("1cx2siY3Ecjo8j036j9QCthf9agvYSDRK"), "Human3.6M", 36.1),
        Checkpoint("fastmetro-l-h64-smpl-3dpw", "fastmetro-l-h64-smpl",
                   "FastMETRO-L-H64_smpl_3dpw_state_dict.bin",
                   _drive("16iSWbk9SQrlUDpWwD6pLknv2_4S5_XBS"), "3DPW", 51.0),
        # The hand network (MANO right-hand mesh); PA-MPJPE on FreiHAND's test set.
        Checkpoint("fastmetro-hand-l-h64-freihand", "fastmetro-hand-l-h64", "FastMETRO-L-H64_freihand_state_dict.bin",
                   _drive("1u6dr0E1w15IBmstcFaihr6r-DHKFWuw1"), "FreiHAND", 6.5),
    ]
}


def checkpoint_dirs() -> list[Path]:
    dirs = []
    if os.environ.get(ENV_CHECKPOINTS):
        dirs.append(Path(os.environ[ENV_CHECKPOINTS]).expanduser())
    dirs.append(cache_dir() / "checkpoints")
    return dirs


def find_checkpoint(name: str) -> Optional[Path]:
    """Local path of a registry checkpoint, or None if it is in none of checkpoint_dirs()."""
    ckpt = CHECKPOINTS[name]
    for d in checkpoint_dirs():
        if (d / ckpt.filename).is_file():
            return d / ckpt.filename
    return None


# Every official checkpoint is over 100 MB; a PyTorch file starts with a zip header (torch.save since
# 1.6) or, in the legacy format, with a pickled magic number.
MIN_CHECKPOINT_BYTES = 1 << 20
_CHECKPOINT_MAGICS = (b"PK\x03\x04", b"\x80\x02\x8a\x0a")


def check_checkpoint_file(path: Path) -> None:
    """AssetError unless `path` looks like a PyTorch checkpoint: a download that returned an HTML page
    (Google Drive's quota or virus-scan notice) or was cut short is refused before it is cached."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(64)
    if not head.startswith(_CHECKPOINT_MAGICS):
        what = "an HTML page" if head.lstrip().lower().startswith((b"<!doctype", b"<html")) else "not a PyTorch file"
        raise AssetError(f"the download is {what} ({size} bytes), not a checkpoint")
    if size < MIN_CHECKPOINT_BYTES:
        raise AssetError(f"the download is {size} bytes, too small for a checkpoint (cut short?)")


def fetch_checkpoint(name: str) -> Path:
    """Local path of a registry checkpoint, downloading it into the cache if needed (checked before it
    is cached; a bad file an older version cached is replaced)."""
    if name not in CHECKPOINTS:
        raise CheckpointError(f"unknown checkpoint {name!r}; known: {', '.join(CHECKPOINTS)}")
    ckpt = CHECKPOINTS[name]
    dest = cache_dir() / "checkpoints" / ckpt.filename
    found = find_checkpoint(name)
    if found and found == dest:
        try:
            check_checkpoint_file(found)
        except AssetError as e:
            log.warning("cached checkpoint %s is bad (%s): downloading it again", found, e)
            found.unlink()
            found = None
    if found:
        return found
    try:
        return download(ckpt.url, dest, desc=ckpt.filename, check=check_checkpoint_file)
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {name} ({ckpt.filename}) is not on this machine and could not be downloaded "
            f"({e}). Download it from {DOWNLOAD_DOC} and put it in {dest.parent}"
            f" (or in the directory named by {ENV_CHECKPOINTS})."
        ) from e


def read_state_dict(path: Union[str, os.PathLike]) -> dict[str, torch.Tensor]:
    """Read a state_dict file without running pickled code; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt, truncated or not a PyTorch state_dict ({first}). "
            f"Download it again from {DOWNLOAD_DOC}."
        ) from None
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state_dict (a mapping of tensors)")
    # Checkpoints saved from a DataParallel/DistributedDataParallel wrapper prefix every key.
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def infer_variant(keys) -> Variant:
    """The variant whose state_dict has these keys (size, backbone and head read off the names). A hand
    network has the same keys as a body one except the body's learned coarse-to-intermediate upsampling."""
    keys = set(keys)
    enc = {k.split(".")[3] for k in keys if k.startswith("transformer_1.encoder.layers.")}
    size = {1: "s", 2: "m", 3: "l"}.get(len(enc))
    if any(k.startswith("backbone.stage4.") for k in keys):
        bb = "h64"
    elif any(k.startswith("backbone.7.") for k in keys):
        bb = "r50"
    else:
        bb = None
    if size is None or bb is None or "xyz_regressor.weight" not in keys:
        raise CheckpointError("these keys are not those of a FastMETRO body or hand network")
    smpl = any(k.startswith("smpl_parameter_regressor.") for k in keys)
    if "coarse2intermediate_upsample.weight" not in keys and not smpl:
        return get_variant(f"fastmetro-hand-{size}-{bb}")
    return get_variant(f"fastmetro-{size}-{bb}{'-smpl' if smpl else ''}")


def load_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state_dict") -> None:
    """Strictly load state_dict into a FastMETRO model; a mismatch says what differs and what fits."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state_dict) if tuple(expected[k].shape) != tuple(state_dict[k].shape)
    )
    if missing or unexpected or wrong_shape:
        try:
            fits = f"; it fits the variant {infer_variant(state_dict.keys()).name!r}"
        except CheckpointError:
            fits = "; it is not a FastMETRO checkpoint"

        def show(ks):
            return ", ".join(ks[:5]) + (f", ... ({len(ks)} in all)" if len(ks) > 5 else "")

        parts = [f"{source} does not fit {model.variant.name}{fits}."]
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if wrong_shape:
            parts.append(f"wrong shapes: {show(wrong_shape)}")
        raise CheckpointError("\n  ".join(parts))
    model.load_state_dict(state_dict, strict=True)
    model.pretrained = True


def resolve(checkpoint: Union[str, os.PathLike]) -> tuple[Path, Optional[Checkpoint]]:
    """A registry name or a file path -> (local path, registry entry or None)."""
    if isinstance(checkpoint, str) and checkpoint in CHECKPOINTS:
        return fetch_checkpoint(checkpoint), CHECKPOINTS[checkpoint]
    path = Path(checkpoint).expanduser()
    if not path.exists() and isinstance(checkpoint, str) and os.sep not in checkpoint and not path.suffix:
        raise CheckpointError(
            f"{checkpoint!r} is neither a file nor a known checkpoint; known: {', '.join(CHECKPOINTS)}"
        )
    by_file = {c.filename: c for c in CHECKPOINTS.values()}
    return path, by_file.get(path.name)


def status() -> list[dict]:
    """One row per registry checkpoint: name, variant, dataset, PA-MPJPE, local path or None."""
    return [
        {
            "name": c.name,
            "variant": c.variant,
            "dataset": c.dataset,
            "pa_mpjpe_mm": c.pa_mpjpe_mm,
            "path": find_checkpoint(c.name),
            "filename": c.filename,
        }
        for c in CHECKPOINTS.values()
    ]


assert all(c.variant in VARIANTS for c in CHECKPOINTS.values())
