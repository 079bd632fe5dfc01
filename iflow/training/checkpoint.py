"""Resume checkpoints: the whole training state, so a killed run continues bit for bit.

A checkpoint holds the model, optimizer and schedule states, every random
number generator (torch, numpy, Python, the trainer's data-order generator),
the position in the data order and the history so far. It is written
atomically and only from a finite state. Unlike ``model.pt`` it holds Python
objects (RNG states), so it is loaded with ``weights_only=False``: only ever
load checkpoints this program wrote.
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
CHECKPOINT_VERSION = 1


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
    """Every generator training draws from (CUDA's too when present)."""
    states = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
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
    """Read a checkpoint written by :func:`save_checkpoint`; one clear error for anything else."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own file: holds RNG states
    except Exception as exc:  # noqa: BLE001 (torch raises many types for corrupt files)
        raise UserError(f"{path}: unreadable checkpoint ({type(exc).__name__}); start again with --overwrite") from None
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"{path}: not an iflow checkpoint")
    if state.get("version", 0) > CHECKPOINT_VERSION:
        raise UserError(f"{path}: written by a newer iflow (checkpoint version {state['version']}); upgrade iflow")
    return state
