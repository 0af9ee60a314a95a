"""Datasets for the glocal experiments.

Three datasets are supported:

* ``digits``: scikit-learn's bundled 8x8 digits (no download).
* ``mnist``: the four IDX files (optionally gzipped) in a local directory.
* ``cifar10``: the "CIFAR-10 python version" batches in a local directory,
  read with a restricted unpickler that only admits what genuine batches need.

All loaders return a :class:`DataSplits` with train / validation / test
tensors, standardized with statistics of the (final) training split.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import pickletools
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["DataSplits", "load_dataset", "flip_labels", "read_idx", "DATASETS", "RestrictedUnpickler", "UnsafePickleError"]

DATASETS = ("digits", "mnist", "cifar10")

MNIST_URL = "http://yann.lecun.com/exdb/mnist/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
#: Largest IDX payload read (bytes). MNIST's largest file holds 47 MB, EMNIST's 550 MB; a header
#: declaring more is refused before anything is decompressed (a gzip bomb declares a lot, or holds
#: more than it declares: both are caught before the stream is read past the declared size).
MAX_IDX_BYTES = 2**31
_N_CLASSES = 10

_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_SUBDIR = "cifar-10-batches-py"

# Minimum std used when standardizing (features are first scaled to [0, 1]);
# (near-)constant features are then left (almost) unscaled instead of blown up.
_STD_FLOOR = 0.1


@dataclass
class DataSplits:
    """Train / validation / test splits of one dataset.

    ``x_*`` are float tensors of the requested dtype, either flat vectors
    (``flatten=True``) or NCHW images; ``y_*`` are ``torch.long`` labels.
    ``in_shape`` is the shape of ONE example of ``x`` as delivered (``(D,)``
    when flat); ``image_shape`` is always the ``(C, H, W)`` image shape.
    ``flipped`` / ``clean_y_train`` are set only when label noise was injected
    into the training split (``y_train`` then holds the noisy labels).
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int
    in_shape: tuple
    name: str
    image_shape: tuple = ()
    flipped: Tensor | None = None
    clean_y_train: Tensor | None = None

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return int(self.y_train.shape[0])


# ---------------------------------------------------------------------------
# label noise


def flip_labels(y: Tensor, fraction: float, n_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    """Flip exactly ``round(fraction * N)`` labels, chosen by ``seed``.

    Each chosen label is replaced by a uniformly random *other* class.
    Returns ``(noisy_y, flipped_mask)`` (long tensor, bool tensor of length N);
    the input is not modified.
    """
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"label noise fraction must be in [0, 1], got {fraction}")
    if n_classes < 2:
        raise ValueError(f"flip_labels needs n_classes >= 2, got {n_classes}")
    y_np = torch.as_tensor(y).detach().cpu().numpy().astype(np.int64)
    n = y_np.shape[0]
    n_flip = int(round(float(fraction) * n))
    rng = np.random.default_rng(seed)
    idx = rng.choice(n, size=n_flip, replace=False)
    offsets = rng.integers(1, n_classes, size=n_flip)
    noisy = y_np.copy()
    noisy[idx] = (y_np[idx] + offsets) % n_classes
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    return torch.from_numpy(noisy).long(), torch.from_numpy(mask)


# ---------------------------------------------------------------------------
# helpers


def _split_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (stratified when possible) split of ``arange(len(y))``.

    Returns ``(keep, held_out)`` with ``len(held_out) == round(fraction * N)``
    (at least 1 when fraction > 0), both sorted.
    """
    n = len(y)
    n_out = int(round(fraction * n))
    if fraction > 0:
        n_out = max(n_out, 1)
    if n_out <= 0:
        return np.arange(n), np.arange(0)
    if n_out >= n:
        raise ValueError(f"split fraction {fraction} leaves no examples out of {n}")
    idx = np.arange(n)
    try:
        from sklearn.model_selection import train_test_split

        keep, out = train_test_split(idx, test_size=n_out, random_state=seed, stratify=y)
    except ValueError:  # too few examples per class for stratification
        perm = np.random.default_rng(seed).permutation(n)
        out, keep = perm[:n_out], perm[n_out:]
    return np.sort(keep), np.sort(out)


def _subsample(y: np.ndarray, n_train: int | None, seed: int) -> np.ndarray:
    """Indices of a deterministic subsample of size ``n_train`` (all if None)."""
    n = len(y)
    if n_train is None or n_train >= n:
        if n_train is not None and n_train > n:
            raise ValueError(f"data.n_train={n_train} exceeds the {n} available training examples")
        return np.arange(n)
    if n_train <= 0:
        raise ValueError(f"data.n_train must be positive, got {n_train}")
    frac_out = (n - n_train) / n
    keep, _ = _split_indices(y, frac_out, seed + 7919)
    if len(keep) != n_train:  # rounding safety
        keep = np.sort(np.random.default_rng(seed + 7919).permutation(n)[:n_train])
    return keep


def _missing(path: Path, what: str, source: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} not found: {path}. Set the config key data.root to the directory holding the files; {source}"
    )


def _finish(
    name: str,
    xs: tuple[np.ndarray, np.ndarray, np.ndarray],
    ys: tuple[np.ndarray, np.ndarray, np.ndarray],
    image_shape: tuple,
    n_classes: int,
    *,
    per: str,
    dtype: torch.dtype,
    flatten: bool,
    label_noise: float,
    noise_seed: int,
) -> DataSplits:
    """Standardize with train statistics, convert to tensors, inject noise."""
    x_tr, x_va, x_te = (np.asarray(x, dtype=np.float64).reshape((-1, *image_shape)) for x in xs)
    if per == "feature":
        mean = x_tr.mean(axis=0, keepdims=True)
        std = x_tr.std(axis=0, keepdims=True)
    elif per == "channel":
        mean = x_tr.mean(axis=(0, 2, 3), keepdims=True)
        std = x_tr.std(axis=(0, 2, 3), keepdims=True)
    else:  # pragma: no cover - internal
        raise AssertionError(per)
    std = np.maximum(std, _STD_FLOOR)

    def conv(x: np.ndarray) -> Tensor:
        t = torch.from_numpy((x - mean) / std).to(dtype)
        return t.reshape(t.shape[0], -1) if flatten else t.contiguous()

    y_tr, y_va, y_te = (torch.from_numpy(np.asarray(y, dtype=np.int64)) for y in ys)
    flipped = clean = None
    if label_noise and label_noise > 0:
        clean = y_tr
        y_tr, flipped = flip_labels(y_tr, label_noise, n_classes, noise_seed)
    x_train = conv(x_tr)
    return DataSplits(
        x_train=x_train,
        y_train=y_tr,
        x_val=conv(x_va),
        y_val=y_va,
        x_test=conv(x_te),
        y_test=y_te,
        n_classes=n_classes,
        in_shape=tuple(x_train.shape[1:]),
        name=name,
        image_shape=tuple(image_shape),
        flipped=flipped,
        clean_y_train=clean,
    )


# ---------------------------------------------------------------------------
# MNIST (IDX)


def _find_file(root: Path, name: str, source: str) -> Path:
    for cand in (root / name, root / (name + ".gz")):
        if cand.is_file():
            return cand
    raise _missing(root / name, f"file (or {name}.gz)", source)


def _read_exact(fh, n: int, path: Path, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise ValueError(f"{path}: truncated: {what} needs {n} bytes, the file holds {len(data)}; "
                         "download the file again")
    return data


def read_idx(path: str | Path, expected_magic: int | None = None, *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (optionally ``.gz``) into a numpy array.

    Only the unsigned-byte type (0x08) is supported. The header's dimensions are checked against
    ``max_bytes`` and the data is read up to the declared size and one byte more, never further,
    so a gzip bomb costs nothing. A wrong magic number, an unsupported type, a truncated file, a
    file with more data than its header declares, or a damaged gzip stream raises ``ValueError``
    naming the file.
    """
    path = Path(path)
    gz = path.suffix == ".gz"
    try:
        with (gzip.open if gz else open)(path, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4:
                raise ValueError(f"{path}: too short to be an IDX file ({len(head)} bytes)")
            magic = int.from_bytes(head, "big")
            if expected_magic is not None and magic != expected_magic:
                raise ValueError(
                    f"{path}: bad IDX magic number {magic} (expected {expected_magic}); not an MNIST IDX file?"
                )
            if head[0] != 0 or head[1] != 0 or head[2] != 0x08:
                raise ValueError(f"{path}: unsupported IDX header (magic {magic}); only unsigned bytes supported")
            ndim = head[3]
            dims = tuple(int(d) for d in np.frombuffer(_read_exact(fh, 4 * ndim, path, "the IDX header"), dtype=">u4"))
            size = int(np.prod(dims, dtype=object)) if dims else 1
            if size > max_bytes:
                raise ValueError(f"{path}: its header declares dims {dims}, {size} bytes, more than the "
                                 f"{max_bytes} an IDX file may hold here; not an MNIST file (a decompression bomb?)")
            if not gz:
                actual = os.fstat(fh.fileno()).st_size - 4 - 4 * ndim
                if actual != size:
                    raise ValueError(f"{path}: IDX payload has {actual} bytes, dims {dims} need {size}; "
                                     "download the file again")
            payload = _read_exact(fh, size, path, f"dims {dims}")
            if fh.read(1):
                raise ValueError(f"{path}: holds more data than its header declares (dims {dims}, {size} bytes); "
                                 "not an MNIST IDX file (a decompression bomb?); reading stopped there")
    except gzip.BadGzipFile as exc:
        raise ValueError(f"{path}: not a valid gzip file ({exc}); download it again, or drop the .gz suffix "
                         "if the file is not compressed") from None
    except EOFError:
        raise ValueError(f"{path}: the gzip stream is truncated (an interrupted download?); download it again") from None
    except zlib.error as exc:
        raise ValueError(f"{path}: damaged gzip data ({exc}); download it again") from None
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims).copy()


def _load_mnist_raw(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    source = f"MNIST IDX files come from {MNIST_URL}"
    if not root.is_dir():
        raise _missing(root, "MNIST directory", source)
    out, paths = {}, {}
    for key, fname in _MNIST_FILES.items():
        path = _find_file(root, fname, source)
        magic = _IDX_IMAGES_MAGIC if key.endswith("images") else _IDX_LABELS_MAGIC
        arr = read_idx(path, magic)
        if key.endswith("images") and arr.ndim != 3:
            raise ValueError(f"{path}: expected a 3-D image array, got shape {arr.shape}")
        if key.endswith("labels") and arr.ndim != 1:
            raise ValueError(f"{path}: expected a 1-D label array, got shape {arr.shape}")
        if key.endswith("images") and arr.shape[0] == 0:
            raise ValueError(f"{path}: holds no images; download the file again ({source})")
        if key.endswith("labels") and arr.size and arr.max() >= _N_CLASSES:
            i = int(np.argmax(arr >= _N_CLASSES))
            raise ValueError(f"{path}: label {int(arr[i])} (example {i}) lies outside 0..{_N_CLASSES - 1}; "
                             f"not an MNIST label file, or a damaged one: download it again ({source})")
        out[key], paths[key] = arr, path
    for part in ("train", "test"):
        if len(out[f"{part}_images"]) != len(out[f"{part}_labels"]):
            raise ValueError(
                f"MNIST {part}: {len(out[f'{part}_images'])} images but "
                f"{len(out[f'{part}_labels'])} labels in {root}"
            )
    tr, te = out["train_images"].shape[1:], out["test_images"].shape[1:]
    if tr != te:
        raise ValueError(f"MNIST: the training images ({paths['train_images']}) are {tr[0]}x{tr[1]} but the test "
                         f"images ({paths['test_images']}) are {te[0]}x{te[1]}; both files must come from the same "
                         f"dataset ({source})")
    return out["train_images"], out["train_labels"], out["test_images"], out["test_labels"]


# ---------------------------------------------------------------------------
# CIFAR-10 (restricted pickle)


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle that asks for a global outside :attr:`RestrictedUnpickler.ALLOWED` (never called)."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler admitting only the globals a genuine CIFAR-10 batch needs.

    Anything else (``os.system``, ``builtins.eval``, ...) raises :class:`UnsafePickleError`
    (a ``pickle.UnpicklingError``) naming the refused global, before it is called. Admitted: numpy's
    array and scalar reconstruction (protocol 2, as the original files, and protocol 5, as numpy
    writes a re-pickled batch) and ``_codecs.encode`` (bytes in protocol-2 pickles of Python 3).
    """

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            # protocol 5: numpy pickles an array as _frombuffer(PickleBuffer, dtype, shape, order)
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            # protocol-2 pickles written by Python 3 encode bytes via _codecs.encode
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(f"refused global '{module}.{name}' in a CIFAR-10 batch")


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    source = f'CIFAR-10 "python version" batches come from {CIFAR10_URL}'
    with open(path, "rb") as fh:
        raw = fh.read()
    if not raw:
        raise ValueError(f"{path}: empty file, not a CIFAR-10 batch; download it again ({source})")
    # Walk the opcodes first: a truncated or garbage file, or a length that the file does not hold
    # (a declared 2**62-byte string), fails here, before the unpickler allocates anything.
    try:
        for _ in pickletools.genops(raw):
            pass
    except Exception as exc:  # noqa: BLE001 - pickletools raises ValueError, but also others on garbage
        raise ValueError(f"{path}: not a complete pickle ({exc}); truncated or not a CIFAR-10 python batch: "
                         f"download it again ({source})") from None
    try:
        obj = RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}; the file was not loaded (nothing in it was run)") from None
    except Exception as exc:  # noqa: BLE001 - whatever a damaged pickle makes the admitted globals raise
        raise ValueError(f"{path}: cannot be read as a CIFAR-10 batch ({type(exc).__name__}: {exc}); "
                         f"download it again ({source})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a CIFAR-10 batch (unpickled a {type(obj).__name__})")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: CIFAR-10 batch lacks 'data' or 'labels'")
    try:
        data = np.asarray(data)
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{path}: CIFAR-10 batch with unreadable data or labels ({exc})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] == 0:
        raise ValueError(f"{path}: expected uint8 data of shape (N, 3072), N > 0, got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise ValueError(f"{path}: labels do not match the data (shape {labels.shape}) or lie outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar_raw(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    source = f'CIFAR-10 "python version" batches come from {CIFAR10_URL}'
    if not root.is_dir():
        raise _missing(root, "CIFAR-10 directory", source)
    base = root
    if not (root / _CIFAR_TRAIN[0]).exists() and (root / _CIFAR_SUBDIR).is_dir():
        base = root / _CIFAR_SUBDIR
    paths = [base / n for n in (*_CIFAR_TRAIN, _CIFAR_TEST)]
    for p in paths:
        if not p.is_file():
            raise _missing(p, "CIFAR-10 batch file", source)
    batches = [_load_cifar_batch(p) for p in paths]
    x_tr = np.concatenate([b[0] for b in batches[:-1]])
    y_tr = np.concatenate([b[1] for b in batches[:-1]])
    return x_tr, y_tr, batches[-1][0], batches[-1][1]


# ---------------------------------------------------------------------------
# entry point


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    n_train: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    flatten: bool = True,
    label_noise: float = 0.0,
    noise_seed: int | None = None,
) -> DataSplits:
    """Load dataset ``name`` ('digits' | 'mnist' | 'cifar10') as :class:`DataSplits`.

    * digits: stratified split by ``seed``; ``test_fraction`` and ``val_fraction``
      are fractions of all 1797 images. Per-feature standardization.
    * mnist / cifar10: read from ``root`` (config key ``data.root``); the test set
      is the official one (``test_fraction`` ignored), the validation split is
      ``val_fraction`` of the official training set. mnist: one mean/std;
      cifar10: per-channel mean/std.

    ``n_train`` subsamples the training split deterministically (after the
    val split is carved out); standardization uses the final training split.
    ``label_noise > 0`` flips that fraction of training labels with
    ``flip_labels(..., seed=noise_seed if given else seed)``.
    """
    name = str(name).lower()
    if name not in DATASETS:
        raise ValueError(f"data.name must be one of {list(DATASETS)}, got {name!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    noise_seed = seed if noise_seed is None else noise_seed

    if name == "digits":
        from sklearn.datasets import load_digits

        if not 0.0 < test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
            raise ValueError(
                f"data.test_fraction ({test_fraction}) and data.val_fraction ({val_fraction}) "
                "must be positive and sum to less than 1"
            )
        d = load_digits()
        x = d.images.astype(np.float64) / 16.0
        y = d.target.astype(np.int64)
        rest, test = _split_indices(y, test_fraction, seed)
        rel_val = val_fraction / (1.0 - test_fraction)
        tr_rel, va_rel = _split_indices(y[rest], rel_val, seed + 1)
        train, val = rest[tr_rel], rest[va_rel]
        image_shape, n_classes, per = (1, 8, 8), 10, "feature"
        x_tr_all, y_tr_all = x[train], y[train]
        x_va, y_va, x_te, y_te = x[val], y[val], x[test], y[test]
    else:
        if root is None:
            src = MNIST_URL if name == "mnist" else CIFAR10_URL
            raise FileNotFoundError(
                f"dataset {name!r} needs local files: set the config key data.root to their "
                f"directory (files from {src})"
            )
        root = Path(root).expanduser()
        if name == "mnist":
            x_full, y_full, x_te, y_te = _load_mnist_raw(root)
            image_shape, per = (1, *x_full.shape[1:]), "channel"
        else:
            x_full, y_full, x_te, y_te = _load_cifar_raw(root)
            image_shape, per = (3, 32, 32), "channel"
        n_classes = 10
        scale = 255.0
        x_full = x_full.astype(np.float64) / scale
        x_te = x_te.astype(np.float64) / scale
        tr, va = _split_indices(y_full, val_fraction, seed)
        x_tr_all, y_tr_all = x_full[tr], y_full[tr]
        x_va, y_va = x_full[va], y_full[va]

    sub = _subsample(y_tr_all, n_train, seed)
    return _finish(
        name,
        (x_tr_all[sub], x_va, x_te),
        (y_tr_all[sub], y_va, y_te),
        image_shape,
        n_classes,
        per=per,
        dtype=dtype,
        flatten=flatten,
        label_noise=label_noise,
        noise_seed=noise_seed,
    )
