"""Small shared helpers: atomic writes, provenance, device and seed handling."""

from __future__ import annotations

import csv
import errno
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
    "OutputError",
    "output_error",
    "make_dirs",
    "current_umask",
    "remove_stale_temp_files",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_csv",
    "atomic_torch_save",
    "resolve_device",
    "resolve_dtype",
    "set_seed",
    "versions",
    "to_jsonable",
    "add_threads_argument",
    "apply_threads",
]


class OutputError(OSError):
    """An output file or directory could not be written; the message names the path and the remedy."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)  # str(exc) is the message alone, without "[Errno N]"
        self.errno = code


_WRITE_REMEDIES = {
    errno.ENOSPC: "the disk holding it is full: free space (or choose another --out) and run again",
    errno.EDQUOT: "the disk quota is exceeded: free space (or choose another --out) and run again",
    errno.EACCES: "it is not writable: fix its permissions or choose another --out",
    errno.EPERM: "it is not writable: fix its permissions or choose another --out",
    errno.EROFS: "it is on a read-only file system: choose another --out",
    errno.EFBIG: "the file size limit (ulimit -f) was reached: raise it or choose another --out",
    errno.ENOTDIR: "a component of the path is a file, not a directory: choose another --out",
}


def output_error(path: str | os.PathLike, exc: OSError, what: str = "write") -> OutputError:
    """An :class:`OutputError` for ``exc`` raised while trying to ``what`` ``path``: names both and the remedy."""
    reason = exc.strerror or str(exc)
    remedy = _WRITE_REMEDIES.get(exc.errno or -1)
    msg = f"cannot {what} {path}: {reason}" + (f"; {remedy}" if remedy else "")
    return OutputError(exc.errno, msg)


def current_umask() -> int:
    """The process umask (read from /proc where possible, so that no other thread sees it changed)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_dirs(path: str | os.PathLike) -> Path:
    """``mkdir -p path``; an :class:`OutputError` naming the path when it cannot be created."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file is in the way
        raise OutputError(errno.ENOTDIR, f"cannot create directory {path}: a file of that name exists") from exc
    except OSError as exc:
        raise output_error(path, exc, "create directory") from exc
    return path


#: Prefix and suffix of the temporary files of :func:`atomic_write_bytes` (see :func:`remove_stale_temp_files`).
TMP_PREFIX, TMP_SUFFIX = ".", ".tmp"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename).

    The file gets the mode a plain ``open(path, "w")`` would give (0666 minus the umask), not the
    0600 of a temporary file, so that results on a shared file system stay readable by the group.
    A failure (no space left, no permission) raises :class:`OutputError` naming the path and leaves
    an existing ``path`` untouched.
    """
    path = Path(path)
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.", suffix=TMP_SUFFIX)
    except OSError as exc:
        raise output_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise output_error(path, exc) from exc
        raise


def remove_stale_temp_files(directory: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Delete the temporary files that interrupted :func:`atomic_write_bytes` calls left in ``directory``.

    Only safe while no other process writes there (a run directory holds its lock). Returns the
    files removed.
    """
    directory = Path(directory)
    pattern = f"{TMP_PREFIX}*{TMP_SUFFIX}"
    found = directory.rglob(pattern) if recursive else directory.glob(pattern)
    removed = []
    for p in sorted(found):
        if p.is_file() and not p.is_symlink():
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
    return removed


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
    """Set torch's and numpy's BLAS CPU threads from ``--threads``, else $OMP_NUM_THREADS, else 1; return the number.

    numpy's BLAS (used by the PyDMD peer and scipy) starts one thread per core by default, which
    on a shared or busy machine is many times slower than one thread on these small matrices.
    """
    n = max(1, threads or int(os.environ.get("OMP_NUM_THREADS") or 1))
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n, user_api="blas")
    except ImportError:  # threadpoolctl comes with scikit-learn; without it numpy keeps its default
        pass
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
