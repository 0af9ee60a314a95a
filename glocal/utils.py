"""Small shared helpers: atomic writes, provenance, device and seed handling."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import random
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_csv",
    "atomic_torch_save",
    "load_checkpoint",
    "resolve_device",
    "resolve_dtype",
    "set_seed",
    "versions",
    "to_jsonable",
    "add_threads_argument",
    "apply_threads",
]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert tensors, numpy values, complex numbers and paths into JSON-friendly objects."""
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu()
        if obj.is_complex():
            return [[float(z.real), float(z.imag)] for z in obj.reshape(-1)]
        return obj.tolist()
    if isinstance(obj, np.ndarray):
        return to_jsonable(torch.from_numpy(obj))
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, complex):
        return [obj.real, obj.imag]
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (non-finite floats become null)."""
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def atomic_write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str]) -> None:
    """Write rows of dicts as CSV atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    atomic_write_text(path, buf.getvalue())


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Load a checkpoint written by :func:`atomic_torch_save`; never unpickles arbitrary objects."""
    return torch.load(path, map_location="cpu", weights_only=True)


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto|cpu|cuda`` to a device; ``auto`` picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {name!r} was requested but CUDA is not available on this machine")
        return torch.device(name)
    raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {name!r}")


def resolve_dtype(name: str) -> torch.dtype:
    """Map ``float32|float64`` to a torch dtype."""
    table = {"float32": torch.float32, "float64": torch.float64}
    if name not in table:
        raise ValueError(f"dtype: expected one of {sorted(table)}, got {name!r}")
    return table[name]


def set_seed(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def add_threads_argument(parser) -> None:
    """The ``--threads`` option shared by the commands that train."""
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: $OMP_NUM_THREADS, else 1: these small models run fastest "
                             "single-threaded, and oversubscribed cores slow small operations 10-50x)")


def apply_threads(threads: int | None) -> int:
    """Set torch's CPU threads from ``--threads``, else $OMP_NUM_THREADS, else 1; return the number."""
    n = max(1, threads or int(os.environ.get("OMP_NUM_THREADS") or 1))
    torch.set_num_threads(n)
    return n


def versions() -> dict[str, str]:
    """Versions of the interpreter and key libraries, for provenance in every result file."""
    from glocal import __version__

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "glocal": __version__,
        "platform": platform.platform(),
    }
    try:
        import scipy

        out["scipy"] = scipy.__version__
    except ImportError:  # pragma: no cover - scipy is a dependency
        pass
    return out
