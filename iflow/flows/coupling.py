"""A coupling layer's split and merge on ``x: (batch, features)``, in a few cheap ops.

nflows' ``CouplingTransform`` splits the features by advanced indexing and merges
them into an empty tensor by two index-puts, each an autograd node of its own;
here two ``index_select`` and one ``index_copy``. Image inputs (4-D) and layers
with an unconditional transform keep nflows' path.
"""

from __future__ import annotations

from collections.abc import Callable

from nflows.transforms.coupling import CouplingTransform
from torch import Tensor


def takes_fast_path(layer: CouplingTransform, inputs: Tensor) -> bool:
    """Whether :func:`couple` applies: 2-D inputs of the right width, no unconditional transform."""
    if inputs.dim() != 2 or layer.unconditional_transform is not None:
        return False
    if inputs.shape[1] != layer.features:
        raise ValueError(f"Expected features = {layer.features}, got {inputs.shape[1]}.")
    return True


def couple(
    layer: CouplingTransform,
    inputs: Tensor,
    context: Tensor | None,
    transform: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
) -> tuple[Tensor, Tensor]:
    """``inputs`` with the transformed features ``x_b`` replaced by ``transform(x_b, net(x_a))``.

    ``transform(x_b: (batch, m), params: (batch, net outputs)) -> (y_b: (batch, m), logabsdet: (batch,))``.
    """
    params = layer.transform_net(inputs.index_select(1, layer.identity_features), context)
    outputs, logabsdet = transform(inputs.index_select(1, layer.transform_features), params)
    return inputs.index_copy(1, layer.transform_features, outputs), logabsdet
