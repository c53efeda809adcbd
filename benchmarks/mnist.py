"""Load MNIST from the local IDX gzip files, checksummed, as torch tensors.

sqc's benchmarks and reference checkpoints are only reproducible if every run sees byte-identical
data, and the build machines have no network, so this loader never downloads: it reads the four
original ``*-ubyte.gz`` files from a shared directory and refuses to continue unless each one matches
the ``SHA256SUMS`` listed beside it. It depends only on the standard library, numpy and torch so that
it works before (and without) the sqc package being installed.

Where the data lives, in order of precedence:

1. the ``root`` argument of :func:`load_mnist` / :func:`mnist_dir`;
2. the ``SQC_MNIST`` environment variable;
3. ``<repo root>/../shared/data/mnist``, i.e. the ``shared`` directory checked out beside the repo.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

__all__ = ["ENV_VAR", "FILES", "MnistError", "default_mnist_dir", "load_mnist", "mnist_dir"]

ENV_VAR = "SQC_MNIST"
"""Environment variable that overrides the default MNIST directory."""

Split = Literal["train", "test"]

FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images.idx3-ubyte.gz", "train-labels.idx1-ubyte.gz"),
    "test": ("t10k-images.idx3-ubyte.gz", "t10k-labels.idx1-ubyte.gz"),
}
"""(images, labels) file names per split, as published by LeCun et al."""

_IDX_UBYTE_3D = 0x00000803  # magic: unsigned bytes, 3 dimensions (images)
_IDX_UBYTE_1D = 0x00000801  # magic: unsigned bytes, 1 dimension (labels)
_EXPECTED_COUNT = {"train": 60_000, "test": 10_000}


class MnistError(FileNotFoundError):
    """MNIST is missing, incomplete or does not match its checksums.

    A subclass of :class:`FileNotFoundError` so callers (e.g. tests that skip without data) can catch
    the common case without importing this module's types.
    """


def default_mnist_dir() -> Path:
    """``<repo root>/../shared/data/mnist``, resolved from this file so the cwd does not matter."""
    repo_root = Path(__file__).resolve().parent.parent
    return repo_root.parent / "shared" / "data" / "mnist"


def mnist_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the MNIST directory (argument, then ``$SQC_MNIST``, then the default) and check it exists."""
    if root is not None:
        path, source = Path(root), "the root argument"
    elif os.environ.get(ENV_VAR):
        path, source = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        path, source = default_mnist_dir(), "the default location"
    if not path.is_dir():
        raise MnistError(
            f"MNIST directory {path} (from {source}) does not exist; put the four *-ubyte.gz files and "
            f"SHA256SUMS there or set {ENV_VAR} to the directory that holds them (nothing is downloaded)"
        )
    return path


def _read_sha256sums(directory: Path) -> dict[str, str]:
    """Parse ``sha256sum``-style lines (``<hex>  <name>``, optional ``*`` binary marker)."""
    sums_path = directory / "SHA256SUMS"
    if not sums_path.is_file():
        raise MnistError(f"{sums_path} is missing; refusing to use unverified MNIST files")
    sums: dict[str, str] = {}
    for line in sums_path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _verified_bytes(directory: Path, name: str, sums: dict[str, str]) -> bytes:
    """Read one gzip file whole and check its SHA-256 before anything parses it."""
    path = directory / name
    if not path.is_file():
        raise MnistError(f"{path} is missing")
    if name not in sums:
        raise MnistError(f"{directory / 'SHA256SUMS'} has no entry for {name}")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sums[name]:
        raise MnistError(f"{path} has SHA-256 {digest}, expected {sums[name]} (corrupt or a different file)")
    return raw


def _parse_idx(raw_gz: bytes, magic: int, name: str) -> np.ndarray:
    """Decode an IDX unsigned-byte array: big-endian magic, one uint32 per dimension, then the data."""
    data = gzip.decompress(raw_gz)
    found = int.from_bytes(data[0:4], "big")
    if found != magic:
        raise MnistError(f"{name}: IDX magic 0x{found:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise MnistError(f"{name}: {len(data) - header} data bytes do not match shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist(split: Split, root: str | os.PathLike[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images, labels)`` for ``split`` ("train": 60,000, "test": 10,000 examples).

    ``images`` is float32 ``(N, 1, 28, 28)`` scaled to [0, 1] by ``/ 255`` -- the input convention of
    :mod:`examples.lenet`, with no mean/std normalisation so quantisation passes see the raw range.
    ``labels`` is int64 ``(N,)``. Order is the file order, so "the first 1000 test images" is stable.
    """
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    directory = mnist_dir(root)
    sums = _read_sha256sums(directory)
    image_name, label_name = FILES[split]
    images = _parse_idx(_verified_bytes(directory, image_name, sums), _IDX_UBYTE_3D, image_name)
    labels = _parse_idx(_verified_bytes(directory, label_name, sums), _IDX_UBYTE_1D, label_name)
    n = _EXPECTED_COUNT[split]
    if images.shape != (n, 28, 28) or labels.shape != (n,):
        raise MnistError(
            f"{split} split has shapes {images.shape} / {labels.shape}, expected ({n}, 28, 28) / ({n},)"
        )
    if int(labels.max()) > 9:
        raise MnistError(f"{label_name}: label {int(labels.max())} is outside 0..9")
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255.0)).unsqueeze(1).contiguous()
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y
