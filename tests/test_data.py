"""Tests for glocal.data: digits splits, IDX / CIFAR loaders, label noise, pickle safety."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest
import torch

from glocal.data import DataSplits, flip_labels, load_dataset, read_idx

# ---------------------------------------------------------------------------
# digits


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits", seed=0)


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.tobytes() for r in x.numpy()}


def test_digits_shapes(digits):
    d = digits
    n = len(d.y_train) + len(d.y_val) + len(d.y_test)
    assert n == 1797
    assert d.x_train.shape == (len(d.y_train), 64)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.long
    assert d.in_shape == (64,) and d.image_shape == (1, 8, 8) and d.n_classes == 10
    assert len(d.y_test) == round(0.2 * 1797)
    assert abs(len(d.y_val) - 0.2 * 1797) <= 2
    assert d.flipped is None and d.clean_y_train is None
    # standardized with train statistics
    assert d.x_train.mean(0).abs().max() < 1e-4
    assert torch.isfinite(d.x_val).all() and torch.isfinite(d.x_test).all()


def test_digits_image_layout():
    d = load_dataset("digits", flatten=False, dtype=torch.float64)
    assert d.x_train.shape[1:] == (1, 8, 8) and d.in_shape == (1, 8, 8)
    assert d.x_train.dtype == torch.float64
    flat = load_dataset("digits", dtype=torch.float64)
    torch.testing.assert_close(d.x_train.reshape(len(d.x_train), -1), flat.x_train)


def test_digits_no_overlap():
    from sklearn.datasets import load_digits

    d = load_dataset("digits", seed=3, dtype=torch.float64)
    # map back to raw images: all splits use the same standardization, so
    # compare raw duplicates-free index sets via the un-standardized data
    raw = load_digits().data
    n_unique = len({r.tobytes() for r in raw})
    tr, va, te = _rows(d.x_train), _rows(d.x_val), _rows(d.x_test)
    # only possible overlap would come from duplicate images in the raw data
    overlap = len(tr & va) + len(tr & te) + len(va & te)
    assert overlap <= len(raw) - n_unique


def test_digits_deterministic_and_seed_dependent():
    a = load_dataset("digits", seed=1)
    b = load_dataset("digits", seed=1)
    c = load_dataset("digits", seed=2)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, c.y_train)


def test_digits_n_train():
    a = load_dataset("digits", n_train=100, seed=0)
    b = load_dataset("digits", n_train=100, seed=0)
    full = load_dataset("digits", seed=0)
    assert a.x_train.shape == (100, 64)
    assert torch.equal(a.y_train, b.y_train) and torch.equal(a.x_train, b.x_train)
    assert len(torch.unique(a.y_train)) == 10  # stratified
    assert torch.equal(a.y_val, full.y_val) and torch.equal(a.y_test, full.y_test)
    with pytest.raises(ValueError, match="n_train"):
        load_dataset("digits", n_train=10**6)


def test_digits_label_noise():
    clean = load_dataset("digits", seed=0)
    d = load_dataset("digits", seed=0, label_noise=0.3, noise_seed=5)
    n = len(d.y_train)
    assert d.flipped is not None and d.flipped.dtype == torch.bool
    assert int(d.flipped.sum()) == round(0.3 * n)
    assert torch.equal(d.clean_y_train, clean.y_train)
    assert (d.y_train[d.flipped] != d.clean_y_train[d.flipped]).all()
    assert torch.equal(d.y_train[~d.flipped], d.clean_y_train[~d.flipped])
    assert torch.equal(d.y_val, clean.y_val)  # val / test untouched
    e = load_dataset("digits", seed=0, label_noise=0.3, noise_seed=5)
    assert torch.equal(d.flipped, e.flipped) and torch.equal(d.y_train, e.y_train)


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.5, 1.0])
def test_flip_labels_exact(fraction):
    y = torch.arange(101) % 7
    noisy, mask = flip_labels(y, fraction, 7, seed=0)
    assert int(mask.sum()) == round(fraction * 101)
    assert (noisy[mask] != y[mask]).all()
    assert torch.equal(noisy[~mask], y[~mask])
    assert noisy.min() >= 0 and noisy.max() < 7
    assert torch.equal(y, torch.arange(101) % 7)  # input untouched


def test_flip_labels_uniform_other_class():
    y = torch.zeros(20000, dtype=torch.long)
    noisy, mask = flip_labels(y, 1.0, 4, seed=1)
    counts = torch.bincount(noisy, minlength=4)
    assert counts[0] == 0
    assert (counts[1:].float() / 20000 - 1 / 3).abs().max() < 0.02


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"data\.name.*digits"):
        load_dataset("imagenet")


# ---------------------------------------------------------------------------
# MNIST (IDX)


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_mnist(root, n_train=20, n_test=10, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    files = {
        "train-images-idx3-ubyte": (rng.integers(0, 256, (n_train, 28, 28)), 2051),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10, 2049),
        "t10k-images-idx3-ubyte": (rng.integers(0, 256, (n_test, 28, 28)), 2051),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10, 2049),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, (arr, magic) in files.items():
        data = _idx_bytes(arr, magic)
        if gz:
            with gzip.open(root / (name + ".gz"), "wb") as fh:
                fh.write(data)
        else:
            (root / name).write_bytes(data)
    return files


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loads(tmp_path, gz):
    files = _write_mnist(tmp_path / "mnist", gz=gz)
    d = load_dataset("mnist", root=tmp_path / "mnist", val_fraction=0.2, seed=0)
    assert d.x_train.shape == (16, 784) and d.x_val.shape == (4, 784) and d.x_test.shape == (10, 784)
    assert d.in_shape == (784,) and d.image_shape == (1, 28, 28)
    torch.testing.assert_close(d.y_test, torch.arange(10) % 10)
    img = load_dataset("mnist", root=tmp_path / "mnist", flatten=False, dtype=torch.float64)
    assert img.x_train.shape == (16, 1, 28, 28)
    # test images are the t10k ones, standardized with train statistics
    raw_test = files["t10k-images-idx3-ubyte"][0].astype(np.float64) / 255
    x = img.x_test.numpy()[:, 0]
    corr = np.corrcoef(x.ravel(), raw_test.ravel())[0, 1]
    assert corr > 0.999
    # all train images are present in train or val
    assert len(img.y_train) + len(img.y_val) == 20


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(_idx_bytes(arr, 2051))
    np.testing.assert_array_equal(read_idx(p, 2051), arr)


def test_mnist_bad_magic(tmp_path):
    root = tmp_path / "mnist"
    _write_mnist(root)
    bad = root / "train-labels-idx1-ubyte"
    bad.write_bytes(_idx_bytes(np.arange(20) % 10, 2051))  # image magic on a label file
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte"):
        load_dataset("mnist", root=root)


def test_mnist_truncated(tmp_path):
    root = tmp_path / "mnist"
    _write_mnist(root)
    p = root / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", root=root)


def test_mnist_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.root") as ei:
        load_dataset("mnist", root=tmp_path / "nowhere")
    assert "nowhere" in str(ei.value) and "yann.lecun.com" in str(ei.value)
    root = tmp_path / "mnist"
    _write_mnist(root)
    os.remove(root / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte.*data\.root"):
        load_dataset("mnist", root=root)
    with pytest.raises(FileNotFoundError, match=r"data\.root"):
        load_dataset("mnist", root=None)


# ---------------------------------------------------------------------------
# CIFAR-10 (pickles)


def _write_cifar(root, n_per_batch=6, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_per_batch
        batch = {
            b"batch_label": f"{name} of 6".encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        with open(root / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)


@pytest.mark.parametrize("subdir", [False, True])
def test_cifar_loads(tmp_path, subdir):
    base = tmp_path / "cifar" / ("cifar-10-batches-py" if subdir else "")
    _write_cifar(base)
    d = load_dataset("cifar10", root=tmp_path / "cifar", val_fraction=0.2, flatten=False, seed=0)
    assert d.x_train.shape == (24, 3, 32, 32) and d.x_val.shape == (6, 3, 32, 32)
    assert d.x_test.shape == (5, 3, 32, 32) and d.in_shape == (3, 32, 32)
    assert d.y_train.dtype == torch.long
    # per-channel normalization with train statistics
    m = d.x_train.mean(dim=(0, 2, 3))
    assert m.abs().max() < 1e-4
    with open(base / "test_batch", "rb") as fh:
        test = pickle.load(fh, encoding="bytes")
    assert d.y_test.tolist() == test[b"labels"]
    flat = load_dataset("cifar10", root=tmp_path / "cifar", seed=0)
    assert flat.x_train.shape == (24, 3072)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("evil_cls", [_Evil, _EvalEvil])
def test_cifar_malicious_pickle_refused(tmp_path, evil_cls):
    root = tmp_path / "cifar"
    _write_cifar(root)
    marker = tmp_path / "pwned"
    payload = {b"data": evil_cls(marker), b"labels": [0]}
    with open(root / "data_batch_1", "wb") as fh:
        pickle.dump(payload, fh, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        load_dataset("cifar10", root=root)
    assert not marker.exists()


def test_cifar_missing(tmp_path):
    root = tmp_path / "cifar"
    _write_cifar(root)
    os.remove(root / "data_batch_3")
    with pytest.raises(FileNotFoundError, match=r"data_batch_3.*data\.root") as ei:
        load_dataset("cifar10", root=root)
    assert "cs.toronto.edu" in str(ei.value)
    with pytest.raises(FileNotFoundError, match=r"data\.root"):
        load_dataset("cifar10", root=tmp_path / "absent")


def test_cifar_wrong_content(tmp_path):
    root = tmp_path / "cifar"
    _write_cifar(root)
    with open(root / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, fh, protocol=2)
    with pytest.raises(ValueError, match="test_batch"):
        load_dataset("cifar10", root=root)


# ---------------------------------------------------------------------------
# damaged or hostile files: errors name the file (and the remedy), nothing runs, nothing blows up


def test_mnist_labels_out_of_range(tmp_path):
    root = tmp_path / "mnist"
    _write_mnist(root)
    labels = np.arange(20) % 10
    labels[7] = 10
    (root / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(labels, 2049))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: label 10 \(example 7\) lies outside 0\.\.9"):
        load_dataset("mnist", root=root)


def test_mnist_train_and_test_image_sizes_differ(tmp_path):
    root = tmp_path / "mnist"
    _write_mnist(root)
    (root / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((10, 20, 20)), 2051))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\) are 28x28 but .*t10k-images-idx3-ubyte\) are 20x20"):
        load_dataset("mnist", root=root)


@pytest.mark.parametrize("damage, needle", [("not_gzip", "not a valid gzip file"), ("truncated", "truncated"),
                                            ("corrupt", "gzip")])
def test_mnist_damaged_gz_names_the_file(tmp_path, damage, needle):
    root = tmp_path / "mnist"
    _write_mnist(root, gz=True)
    p = root / "train-images-idx3-ubyte.gz"
    raw = p.read_bytes()
    if damage == "not_gzip":
        p.write_bytes(_idx_bytes(np.zeros((20, 28, 28)), 2051))  # plain IDX under a .gz name
    elif damage == "truncated":
        p.write_bytes(raw[: len(raw) // 2])
    else:  # flip bytes in the middle of the deflate stream
        mid = len(raw) // 2
        p.write_bytes(raw[:mid] + bytes(b ^ 0xFF for b in raw[mid : mid + 64]) + raw[mid + 64 :])
    with pytest.raises(ValueError, match=needle) as ei:
        load_dataset("mnist", root=root)
    assert "train-images-idx3-ubyte.gz" in str(ei.value)


def test_mnist_gzip_bomb_stops_at_the_declared_size(tmp_path):
    """A header declaring 10 images followed by 64 MiB of zeros, the stream cut short at the end: the
    loader must stop one byte past the declared size (it would otherwise read on into the cut)."""
    import zlib

    root = tmp_path / "mnist"
    _write_mnist(root, gz=True)
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    parts = [comp.compress(_idx_bytes(np.zeros((10, 28, 28)), 2051))]
    zeros = bytes(2**20)
    parts += [comp.compress(zeros) for _ in range(64)]
    parts.append(comp.flush(zlib.Z_SYNC_FLUSH))  # no end-of-stream: reading to the end would fail differently
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"".join(parts))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: holds more data than its header declares"):
        load_dataset("mnist", root=root)
    # a header declaring more than any dataset file holds is refused before anything is decompressed
    huge = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (2**31, 28, 28))
    with gzip.open(root / "t10k-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(huge)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: its header declares dims \(2147483648, 28, 28\)"):
        load_dataset("mnist", root=root)


def _cifar_batch_bytes(n=4, protocol=2, seed=1) -> bytes:
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"x", b"labels": [int(v) for v in rng.integers(0, 10, n)],
             b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), b"filenames": [b"a.png"] * n}
    return pickle.dumps(batch, protocol=protocol)


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "huge_string"])
def test_cifar_damaged_batch_names_the_file(tmp_path, damage):
    root = tmp_path / "cifar"
    _write_cifar(root)
    good = (root / "data_batch_2").read_bytes()
    content = {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "garbage": os.urandom(4096),
        # BINBYTES8 declaring 2**62 bytes, then a few: the unpickler would try to allocate them
        "huge_string": b"\x80\x04\x8e" + (2**62).to_bytes(8, "little") + b"abc",
    }[damage]
    (root / "data_batch_2").write_bytes(content)
    with pytest.raises(ValueError, match=r"data_batch_2: ") as ei:
        load_dataset("cifar10", root=root)
    assert "download it again" in str(ei.value)


def test_cifar_refusal_names_the_file(tmp_path):
    root = tmp_path / "cifar"
    _write_cifar(root)
    marker = tmp_path / "pwned"
    with open(root / "data_batch_4", "wb") as fh:
        pickle.dump({b"data": _Evil(marker), b"labels": [0]}, fh, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"data_batch_4: refused global '(posix|os)\.system'"):
        load_dataset("cifar10", root=root)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [4, 5])
def test_cifar_genuine_batch_repickled_with_a_newer_protocol_loads(tmp_path, protocol):
    root = tmp_path / "cifar"
    _write_cifar(root)
    with open(root / "data_batch_1", "rb") as fh:
        batch = pickle.load(fh, encoding="bytes")
    batch[b"labels"] = np.asarray(batch[b"labels"], dtype=np.int64)  # as numpy arrays, re-pickled
    (root / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=protocol))
    d = load_dataset("cifar10", root=root, val_fraction=0.2, seed=0)
    assert d.x_train.shape[0] + d.x_val.shape[0] == 30
