"""A model's parameters as views of one buffer, so the optimizer steps a few tensors instead of a hundred.

Why: the default flow has 101 parameter tensors, and the step's zeroing, gradient clipping and fused
Adam each loop over them (on the CPU torch's ``_foreach_*`` ops run tensor by tensor): 1.25 ms of a
13.1 ms step on one thread, 0.56 ms over the flat buffer (0.15 + 0.46 + 0.64 against 0.13 + 0.18 +
0.26 ms, side by side in one process; ``benchmarks/speedup.py`` measures the whole step).

Each parameter's data becomes a slice of ``flat`` and its ``.grad`` the same slice of ``flat.grad``:
autograd adds every parameter's gradient in place into its slice, and an optimizer holding ``flat``
updates all of them at once. The parameters and the model's state dict are unchanged; the
optimizer's state (in a checkpoint) holds the flat tensors. The update is the per-tensor one to
rounding: the clipping norm sums in another order, and fused Adam computes the last elements of
each tensor (fewer than a vector's width) in a scalar loop that rounds apart from its vector loop,
so a run differs from a per-tensor run in the last bits, and from there as runs of two trees do.

Two rules keep the aliasing, and :meth:`FlatParameters.check` tells when one was broken: gradients
are zeroed in place (``zero_grad(set_to_none=False)``), and parameters are written in place
(``copy_``), never rebound (``param.data = ...``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class FlatParameters:
    """``parameters`` (one dtype and device, all trainable) rebound as views of one ``flat`` leaf ``(total,)``."""

    def __init__(self, parameters: list[nn.Parameter]) -> None:
        self.parameters = parameters
        with torch.no_grad():
            self.flat = nn.Parameter(torch.cat([p.reshape(-1) for p in parameters]))
        self.flat.grad = torch.zeros_like(self.flat)
        offset = 0
        for p in parameters:
            end = offset + p.numel()
            p.data = self.flat.data[offset:end].view_as(p)
            p.grad = self.flat.grad[offset:end].view_as(p)
            offset = end

    def check(self) -> None:
        """RuntimeError when a parameter or its gradient no longer aliases the flat buffers (its
        updates would be silently lost)."""
        offset = 0
        for p in self.parameters:
            if not (_at(p, self.flat, offset) and _at(p.grad, self.flat.grad, offset)):
                raise RuntimeError(
                    f"a parameter of shape {tuple(p.shape)} no longer aliases the optimizer's flat buffer: "
                    "something rebound its data or set its gradient to None"
                )
            offset += p.numel()


def _at(view: torch.Tensor | None, base: torch.Tensor | None, offset: int) -> bool:
    """Whether ``view`` starts ``offset`` elements into ``base``'s memory (False when either is None)."""
    return view is not None and base is not None and view.data_ptr() == base.data_ptr() + offset * view.element_size()


@dataclass(frozen=True)
class StepParameters:
    """What a training step updates: the tensors the optimizer steps and clips (``optimized``) and
    the flat groups among them."""

    optimized: list[nn.Parameter]
    flat: list[FlatParameters]


def step_parameters(model: nn.Module, separate: list[nn.Parameter]) -> StepParameters:
    """One flat parameter per (dtype, device) of ``model``'s trainable parameters, then the
    ``separate`` ones (whose optimizer state is reset on their own, as the linear refit does) and
    any frozen ones as they are."""
    apart = {id(p) for p in separate}
    groups: dict[tuple[torch.dtype, torch.device], list[nn.Parameter]] = {}
    rest = []
    for p in model.parameters():
        if p.requires_grad and id(p) not in apart:
            groups.setdefault((p.dtype, p.device), []).append(p)
        else:
            rest.append(p)
    flat = [FlatParameters(group) for group in groups.values()]
    return StepParameters([f.flat for f in flat] + rest, flat)
