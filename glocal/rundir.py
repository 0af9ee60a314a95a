"""The run directory of one ``glocal train`` run, for every strategy.

One run (task x strategy x seed) writes one directory; this module owns it:

* **layout** -- ``config.json`` (resolved config), ``metrics.csv``, ``hypergrads.jsonl``,
  ``summary.json``, ``weights.csv`` (reweight), ``checkpoint.pt`` while a gradient strategy is
  in progress, ``study.db`` and ``trials/trial_kkk/`` for the black-box searches, and ``.lock``
  while a process writes the directory;
* **the lock** -- a second process that opens the same directory refuses, naming the holder
  (pid, host, task, strategy, seed). The lock is an ``flock`` on ``.lock``, so the kernel drops
  it when its process dies, however it dies: the lock file of a killed run is taken over by the
  next start, never obeyed;
* **files** -- every file written atomically with the umask's mode (:mod:`glocal.utils`); the
  temporary files of writes that a kill interrupted are deleted on the next start;
* **checkpoints** -- saved atomically, loaded with ``torch.load(weights_only=True)``. A checkpoint
  holding pickled objects is refused as unsafe (the run stops, naming the file); a truncated,
  corrupt or wrong-sized one is moved aside (kept as ``checkpoint.pt.corrupt-<time>``) and the run
  starts afresh;
* **divergence** -- one definition for every task and strategy (:class:`DivergenceCheck`);
* **metrics and summary** -- :meth:`RunDirectory.write_summary` takes extra sections as keyword
  arguments, so a new statistic is one more argument.

Nothing here knows about strategies: :mod:`glocal.train` and :mod:`glocal.search` both use it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import pickle
import re
import resource
import socket
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from glocal.utils import (
    atomic_torch_save,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    make_dirs,
    output_error,
    remove_stale_temp_files,
    versions,
)

__all__ = [
    "RunDirectory",
    "RunLockedError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "CorruptCheckpointError",
    "StopRequested",
    "Divergence",
    "DivergenceCheck",
    "METRIC_COLUMNS",
    "DEFAULT_MAX_LOSS_RATIO",
    "read_checkpoint",
    "common_summary",
    "best_val_loss",
    "write_metrics",
    "write_weights",
    "fingerprint",
    "all_finite",
    "peak_memory_mb",
    "roc_auc",
]

METRIC_COLUMNS = [
    "step", "run", "wall_time", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
]
#: Default of the config key ``divergence.max_loss_ratio`` (the schema's default).
DEFAULT_MAX_LOSS_RATIO = 10.0


class StopRequested(Exception):
    """Raised (by tests, through ``stop_after``) to simulate a run killed after a checkpoint."""


class RunLockedError(OSError):
    """Another process is writing the run directory; the message names it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)  # str(exc) is the message alone, without "[Errno N]"
        self.errno = errno.EWOULDBLOCK


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holding pickled objects other than tensors and plain data (never loaded)."""


class CorruptCheckpointError(CheckpointError):
    """A truncated, damaged or wrong-sized checkpoint."""


# ------------------------------------------------------------------------------ small helpers
def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-able object (the run's resolved configuration)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def all_finite(*tensors: torch.Tensor) -> bool:
    """True when every entry of every tensor is finite."""
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocations on a GPU, else the resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float | None:
    """ROC AUC of ``scores`` for the boolean labels ``positive`` (None when only one class is present)."""
    from sklearn.metrics import roc_auc_score

    pos = positive.cpu().numpy().astype(int)
    if pos.min() == pos.max():
        return None
    return float(roc_auc_score(pos, scores.detach().cpu().to(torch.float64).numpy()))


def write_metrics(directory: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """``metrics.csv`` of a run (or of one search trial): :data:`METRIC_COLUMNS` then the ``hp:`` columns."""
    hp_cols = sorted({k for row in rows for k in row if k.startswith("hp:")})
    atomic_write_csv(Path(directory) / "metrics.csv", rows, METRIC_COLUMNS + hp_cols)


def write_weights(directory: str | os.PathLike, weights: torch.Tensor, flipped: torch.Tensor) -> float | None:
    """``weights.csv`` (learned weight and flipped flag per example); returns the clean-vs-flipped ROC AUC."""
    w, f = weights.detach().cpu(), flipped.cpu()
    atomic_write_csv(
        Path(directory) / "weights.csv",
        ({"index": i, "weight": float(wi), "flipped": int(fi)} for i, (wi, fi) in enumerate(zip(w.tolist(), f.tolist()))),
        ["index", "weight", "flipped"],
    )
    return roc_auc(w, ~f)


def best_val_loss(rows: Iterable[Mapping[str, Any]]) -> float | None:
    """Lowest finite validation loss of the metrics rows (None if there is none)."""
    vals = [float(r["val_loss"]) for r in rows if r.get("val_loss") is not None and math.isfinite(float(r["val_loss"]))]
    return min(vals, default=None)


def common_summary(*, task: str, strategy: str, seed: int, final: Mapping[str, Any], best_val_loss: float | None,
                   device: torch.device, dtype: torch.dtype, divergence: Divergence | None) -> dict[str, Any]:
    """The entries every run's ``summary.json`` holds, whatever the strategy; the runner adds its own.

    ``final`` is the metrics row the run reports; ``divergence`` gives ``diverged_step`` (null when the
    run did not diverge) and ``divergence`` (its step and reason).
    """
    return {
        "task": task, "strategy": strategy, "seed": seed,
        "final": {k: final.get(k) for k in METRIC_COLUMNS[3:]},
        "best_val_loss": best_val_loss,
        "peak_memory_mb": peak_memory_mb(device),
        "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "versions": versions(),
        "diverged_step": None if divergence is None else divergence.step,
        "divergence": None if divergence is None else divergence.to_record(),
    }


# ------------------------------------------------------------------------------ divergence
@dataclass
class Divergence:
    """Where and why a run diverged."""

    step: int
    reason: str

    def to_record(self) -> dict[str, Any]:
        """JSON-able form (``summary.json``'s ``divergence``)."""
        return asdict(self)


class DivergenceCheck:
    """The one definition of divergence, for every task and strategy (search trials included).

    A run diverges at the first check where

    * the inner state, the hyperparameters or a hypergradient has a non-finite entry, or a loss is
      non-finite (:meth:`tensors`, :meth:`value`, :meth:`training_loss`), or
    * the training loss exceeds ``max_loss_ratio`` times its initial value (:meth:`training_loss`;
      the first training loss seen is the initial one; ``max_loss_ratio=None`` checks finiteness only).

    The config key is ``divergence.max_loss_ratio``; a diverged run ends cleanly, its
    ``summary.json`` holding ``diverged_step`` and ``divergence`` (step and reason).
    """

    def __init__(self, max_loss_ratio: float | None = DEFAULT_MAX_LOSS_RATIO, initial_loss: float | None = None) -> None:
        if max_loss_ratio is not None and not max_loss_ratio > 1:
            raise ValueError(f"divergence.max_loss_ratio: must be above 1, got {max_loss_ratio}")
        self.max_loss_ratio = max_loss_ratio
        self.initial_loss = initial_loss

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DivergenceCheck:
        """The check configured by ``divergence.max_loss_ratio`` (default :data:`DEFAULT_MAX_LOSS_RATIO`)."""
        section = config.get("divergence") or {}
        return cls(section.get("max_loss_ratio", DEFAULT_MAX_LOSS_RATIO))

    def tensors(self, step: int, **named: torch.Tensor | None) -> Divergence | None:
        """A :class:`Divergence` when one of the named tensors (None: not checked) has a non-finite entry."""
        bad = [name for name, t in named.items() if t is not None and not all_finite(t)]
        return Divergence(step, f"non-finite {', '.join(bad)}") if bad else None

    def value(self, step: int, name: str, value: float) -> Divergence | None:
        """A :class:`Divergence` when the scalar ``value`` (a loss named ``name``) is non-finite."""
        value = float(value)
        return None if math.isfinite(value) else Divergence(step, f"non-finite {name} ({value})")

    def training_loss(self, step: int, value: float) -> Divergence | None:
        """A :class:`Divergence` when the training loss is non-finite or above ``max_loss_ratio`` x the initial one.

        The first value seen is the initial training loss (a resumed run sets :attr:`initial_loss`).
        """
        div = self.value(step, "training loss", value)
        if div is not None:
            return div
        value = float(value)
        if self.initial_loss is None:
            self.initial_loss = value
        elif self.max_loss_ratio is not None and value > self.max_loss_ratio * self.initial_loss:
            return Divergence(step, f"training loss {value:.4g} exceeds {self.max_loss_ratio:g} x its initial value "
                                    f"{self.initial_loss:.4g} (divergence.max_loss_ratio)")
        return None


# ------------------------------------------------------------------------------ checkpoints
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Load a checkpoint written by :meth:`RunDirectory.save_checkpoint`; never unpickles arbitrary objects.

    Raises :class:`CorruptCheckpointError` for a file that is truncated, damaged or not a checkpoint,
    and :class:`UnsafeCheckpointError` for one whose pickle holds anything but tensors and plain data.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:  # torch.save writes a zip archive with CRCs: check it whole
            bad = zf.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError, zipfile.LargeZipFile) as exc:
        raise CorruptCheckpointError(f"{path}: truncated or damaged, not a readable checkpoint ({exc})") from None
    if bad is not None:
        raise CorruptCheckpointError(f"{path}: damaged (member {bad} fails its checksum)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        m = _REFUSED_GLOBAL.search(str(exc))
        what = f"a pickled reference to {m.group(1)}" if m else "pickled objects"
        # Deliberately not torch's message: it advises loading with weights_only=False.
        raise UnsafeCheckpointError(
            f"{path}: refused as unsafe, not loaded: it holds {what}, not only tensors and plain data. "
            "glocal never writes such a file; delete it (after a look, if you did not expect it) to start the run afresh"
        ) from None
    except Exception as exc:  # noqa: BLE001 - whatever torch raises on a damaged archive
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise CorruptCheckpointError(f"{path}: damaged, cannot be read ({type(exc).__name__}: {first})") from None


# ------------------------------------------------------------------------------ the directory
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDirectory:
    """One run's directory: create and lock it with :meth:`open` (or ``with``), then write its files.

    ``owner`` (task, strategy, seed, ...) is written into the lock file, so that a second process
    can say who holds the directory.
    """

    LOCK = ".lock"
    CONFIG = "config.json"
    METRICS = "metrics.csv"
    HYPERGRADS = "hypergrads.jsonl"
    SUMMARY = "summary.json"
    WEIGHTS = "weights.csv"
    CHECKPOINT = "checkpoint.pt"

    def __init__(self, path: str | os.PathLike, **owner: Any) -> None:
        self.path = Path(path)
        self.owner = dict(owner)
        self._lock_fd: int | None = None
        self.notes: list[str] = []  # what open() / load_checkpoint() did on the way (also printed)

    # -------------------------------------------------------------------- paths
    @property
    def checkpoint_path(self) -> Path:
        """Where the checkpoint of an unfinished run lies."""
        return self.path / self.CHECKPOINT

    # -------------------------------------------------------------------- lock
    def open(self) -> RunDirectory:
        """Create the directory, take its lock and delete stale temporary files; returns ``self``.

        Raises :class:`RunLockedError` when another process holds the lock, and
        :class:`~glocal.utils.OutputError` when the directory cannot be created or written.
        """
        make_dirs(self.path)
        self._lock()
        for p in remove_stale_temp_files(self.path):
            self._note(f"removed {p}, left by an interrupted write")
        return self

    def close(self) -> None:
        """Release the lock (and delete the lock file)."""
        if self._lock_fd is None:
            return
        try:
            os.unlink(self.path / self.LOCK)
        except FileNotFoundError:
            pass
        os.close(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> RunDirectory:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def locked(self) -> bool:
        """Whether this object holds the directory's lock."""
        return self._lock_fd is not None

    def _lock(self) -> None:
        lock_path = self.path / self.LOCK
        while True:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise output_error(lock_path, exc, "create the lock file") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read_holder(fd)
                os.close(fd)
                raise RunLockedError(self._locked_message(holder)) from None
            except OSError as exc:  # a file system without locks (some network or FUSE mounts)
                self._note(f"warning: cannot lock {lock_path} ({exc.strerror}); "
                           "make sure no other process writes this run directory")
                self._lock_fd = fd
                return
            # A previous holder may have deleted the file between our open() and flock(): retry.
            try:
                same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = self._read_holder(fd)
        if previous:
            pid, host = previous.get("pid"), previous.get("host")
            if host != socket.gethostname():
                state = "its lock was released"
            elif isinstance(pid, int) and _pid_alive(pid):
                state = "its pid now belongs to another process"
            else:
                state = "no longer running"
            self._note(f"took over the lock of {self.path} left by pid {pid} on {host} ({state})")
        info = {"pid": os.getpid(), "host": socket.gethostname(), **self.owner,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info, default=str) + "\n").encode(), 0)
        self._lock_fd = fd

    @staticmethod
    def _read_holder(fd: int) -> dict[str, Any]:
        try:
            raw = os.pread(fd, 65536, 0)
            info = json.loads(raw.decode()) if raw.strip() else {}
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def _locked_message(self, holder: Mapping[str, Any]) -> str:
        if holder:
            who = f"pid {holder.get('pid')} on host {holder.get('host')}"
            what = ", ".join(f"{k} {holder[k]}" for k in ("task", "strategy", "seed") if k in holder)
            since = f", since {holder['started']}" if holder.get("started") else ""
            who = f"{who} ({what}{since})" if what else who + since
        else:
            who = "another process"
        return (f"run directory {self.path} is in use by {who}; wait for that run to finish, "
                "stop it, or choose another --out")

    def _note(self, text: str) -> None:
        self.notes.append(text)
        print(f"glocal train: {text}", file=sys.stderr)

    # -------------------------------------------------------------------- files
    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError(f"{self.path}: open() the run directory before writing to it")

    def write_config(self, resolved: Mapping[str, Any]) -> None:
        """``config.json``: the resolved config, task, strategy, seed, options and fingerprint."""
        self._require_lock()
        atomic_write_json(self.path / self.CONFIG, resolved)

    def write_metrics(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """``metrics.csv`` (see :func:`write_metrics`)."""
        self._require_lock()
        write_metrics(self.path, rows)

    def write_hypergrads(self, records: Iterable[Mapping[str, Any]]) -> None:
        """``hypergrads.jsonl``: one JSON record per hypergradient used (empty for black-box searches)."""
        self._require_lock()
        atomic_write_text(self.path / self.HYPERGRADS, "".join(json.dumps(h, default=str) + "\n" for h in records))

    def write_weights(self, weights: torch.Tensor, flipped: torch.Tensor) -> float | None:
        """``weights.csv`` (see :func:`write_weights`); returns the clean-vs-flipped ROC AUC."""
        self._require_lock()
        return write_weights(self.path, weights, flipped)

    def write_summary(self, summary: Mapping[str, Any], **sections: Any) -> dict[str, Any]:
        """``summary.json``: ``summary`` plus one top-level entry per keyword argument; returns what was written.

        Adding a statistic to every run's summary is one more keyword argument at the call site.
        """
        self._require_lock()
        clash = sorted(set(sections) & set(summary))
        if clash:
            raise ValueError(f"summary sections {clash} would overwrite entries of the summary")
        out = {**summary, **sections}
        atomic_write_json(self.path / self.SUMMARY, out)
        return out

    # -------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, payload: Mapping[str, Any]) -> None:
        """Write ``checkpoint.pt`` atomically (tensors, numbers, strings, lists and dicts of them only)."""
        self._require_lock()
        atomic_torch_save(self.checkpoint_path, dict(payload))

    def load_checkpoint(self, fingerprint: str, check: Callable[[Mapping[str, Any]], None] | None = None) -> dict | None:
        """The checkpoint of an interrupted run with this ``fingerprint``, or None to start afresh.

        A checkpoint of another configuration is ignored (and overwritten by the next one). A
        truncated or damaged checkpoint, or one that ``check`` rejects (raising
        :class:`CorruptCheckpointError`, ``KeyError``, ``TypeError`` or ``ValueError``: wrong sizes),
        is moved aside to ``checkpoint.pt.corrupt-<time>`` and the run starts afresh. An unsafe one
        raises :class:`UnsafeCheckpointError`.
        """
        self._require_lock()
        path = self.checkpoint_path
        if not path.exists():
            return None
        try:
            ck = read_checkpoint(path)
            if not isinstance(ck, dict):
                raise CorruptCheckpointError(f"{path}: holds a {type(ck).__name__}, not a checkpoint")
            if ck.get("fingerprint") != fingerprint:
                self._note(f"{path} belongs to another configuration; starting afresh")
                return None
            if check is not None:
                try:
                    check(ck)
                except (KeyError, TypeError, ValueError) as exc:
                    detail = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
                    raise CorruptCheckpointError(f"{path}: does not fit this run ({detail})") from None
        except CorruptCheckpointError as exc:
            moved = self._move_aside(path)
            self._note(f"{exc}; moved it to {moved.name} and starting the run afresh")
            return None
        return ck

    def remove_checkpoint(self) -> None:
        """Delete the checkpoint (the run is finished)."""
        self.checkpoint_path.unlink(missing_ok=True)

    def _move_aside(self, path: Path) -> Path:
        target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        if target.exists():
            target = target.with_name(f"{target.name}-{os.getpid()}")
        try:
            os.replace(path, target)
        except OSError as exc:
            raise output_error(path, exc, "move aside") from exc
        return target

