"""Torch's CPU thread count for the length of a call, so ``TrainConfig.threads`` holds in the Python API too.

Small models are fastest on one thread, and on a busy machine more threads can be many times
slower; the command line sets the count once per process, a library call sets it for itself
and gives the caller's setting back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

Result = TypeVar("Result")


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """``torch.set_num_threads(count)`` inside the block; the previous count restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def in_train_config_threads(train: Callable[..., Result]) -> Callable[..., Result]:
    """Run ``train(data, model_config, train_config, ...)`` on ``train_config.threads`` torch threads."""

    @functools.wraps(train)
    def wrapper(data, model_config, train_config, *args, **kwargs) -> Result:
        with torch_threads(train_config.threads):
            return train(data, model_config, train_config, *args, **kwargs)

    return wrapper
