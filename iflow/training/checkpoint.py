"""Resume checkpoints: the whole training state, so a killed run continues bit for bit.

A checkpoint holds the model, optimizer and schedule states, every random
number generator (torch, numpy, Python, the trainer's data-order generator),
the position in the data order and the history so far. It is written
atomically and only from a finite state. Every RNG state is stored as tensors
and numbers, so a checkpoint loads with ``weights_only=True``: a file that holds
any other object (a crafted pickle) is refused before anything in it runs, and
its version and layout are checked before :func:`~iflow.training.trainer.fit`
compares its identity (options, data) and only then restores it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import TrainConfig
from ..data.dataset import Dataset
from ..errors import UserError
from ..files import atomic_write

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_VERSION = 2  # 2: RNG states as tensors (weights_only loading)
CHECKPOINT_KEYS = ("model", "optimizer", "schedule", "rng", "progress", "identity", "epoch_start")


@dataclass
class Checkpointing:
    """Where and how often :func:`~iflow.training.trainer.fit` saves its state.

    ``every``: seconds between checkpoints (0: after every step); one is always
    written when training ends. ``resume``: continue from ``path`` if it exists.
    ``context``: anything else a resumed run must match (e.g. the model config).
    """

    path: Path
    every: float = 60.0
    resume: bool = False
    context: dict = field(default_factory=dict)

    def save(self, state: dict) -> bool:
        """Write ``state`` unless its model is not finite; True when written."""
        if not all_finite(state["model"]):
            return False
        save_checkpoint(self.path, state)
        return True


def run_identity(data: Dataset, config: TrainConfig, context: dict) -> dict:
    """What a checkpoint must match to be resumed: the options that change results, and the data."""
    options = {k: v for k, v in asdict(config).items() if k not in ("device", "threads")}
    return {"config": {**options, **context}, "data": data_fingerprint(data.x, data.u)}


def check_same_run(saved: dict, identity: dict, path: Path) -> None:
    """:class:`UserError` unless the checkpoint was made by the same options on the same data."""
    if saved.get("identity", {}).get("data") != identity["data"]:
        raise UserError(f"{path}: the checkpoint was made on different data; pass --overwrite to start again")
    old = saved.get("identity", {}).get("config", {})
    keys = sorted(set(old) | set(identity["config"]))
    changed = [
        f"{k} {old.get(k)!r} -> {identity['config'].get(k)!r}" for k in keys if old.get(k) != identity["config"].get(k)
    ]
    if changed:
        raise UserError(
            f"{path}: options differ from the checkpointed run ({', '.join(changed)}); pass --overwrite to start again"
        )


def rng_states(generator: torch.Generator) -> dict:
    """Every generator training draws from (CUDA's too when present), as tensors and numbers."""
    _, keys, position, has_gauss, cached_gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gauss)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        "generator": generator.get_state(),
    }  # fmt: skip
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
    python = states["python"]
    random.setstate((python["version"], tuple(python["internal"].tolist()), python["gauss_next"]))
    generator.set_state(states["generator"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def all_finite(state_dict: dict) -> bool:
    """True when every floating tensor of a state dict is finite."""
    return all(bool(torch.isfinite(v).all()) for v in state_dict.values() if torch.is_floating_point(v))


def data_fingerprint(*arrays: np.ndarray) -> str:
    """A short hash of the training arrays, to refuse resuming on different data."""
    digest = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()[:16]


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomically write ``state``; refuses (RuntimeError) a state whose model is not finite."""
    if not all_finite(state["model"]):
        raise RuntimeError("refusing to write a checkpoint with non-finite weights")
    atomic_write(Path(path), lambda f: torch.save({"version": CHECKPOINT_VERSION, **state}, f))


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; one clear error for anything else.

    Loaded with ``weights_only=True`` (tensors, numbers, strings and containers only), so
    no code in the file runs; then its version and layout are checked.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch raises many types for corrupt or crafted files)
        raise UserError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}; only tensors and numbers are loaded); "
            "start again with --overwrite"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("version"), int):
        raise UserError(f"{path}: not an iflow checkpoint; start again with --overwrite")
    if state["version"] > CHECKPOINT_VERSION:
        raise UserError(f"{path}: written by a newer iflow (checkpoint version {state['version']}); upgrade iflow")
    if state["version"] < CHECKPOINT_VERSION:
        raise UserError(f"{path}: written by an older iflow (checkpoint version {state['version']}); start again with --overwrite")
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state.get(key), dict)]
    if missing or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise UserError(f"{path}: not an iflow checkpoint (bad or missing {', '.join(missing) or 'model weights'})")
    return state
