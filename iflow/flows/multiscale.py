"""A Glow-style multi-scale flow for small images, vector in and vector out.

Per scale: squeeze (space -> channels), ``steps`` x [actnorm, invertible 1x1
convolution, affine coupling with a small conv net], then half of the channels
are factored out as latents; the last scale keeps all its channels. Built on
nflows' ``SqueezeTransform``, ``ActNorm`` (per channel on 4-D inputs) and
``MultiscaleCompositeTransform``; the coupling is iflow's uncapped
:class:`~iflow.flows.build.AffineCoupling`.

:class:`ImageFlow` reshapes ``(batch, C*H*W)`` to ``(batch, C, H, W)`` itself,
so the model and the prior see flat vectors: the latent is the concatenation of
every scale's factored-out channels, ``(batch, C*H*W)``.
"""

from __future__ import annotations

from nflows.transforms import CompositeTransform, MultiscaleCompositeTransform, SqueezeTransform, Transform
from nflows.transforms import OneByOneConvolution as _NflowsOneByOneConvolution
from torch import Tensor, nn

from .autocast import Autocasting
from .build import ActNorm, AffineCoupling, LULinear, alternating_mask


class OneByOneConvolution(_NflowsOneByOneConvolution, LULinear):
    """nflows' invertible 1x1 convolution, inverting through iflow's :class:`~iflow.flows.build.LULinear`.

    nflows 0.14's inverse is correct on torch 2.13 but goes through the deprecated
    ``torch.triangular_solve`` and warns on every call; the method resolution order
    (nflows conv, then iflow's LULinear, then nflows' LULinear) swaps in the
    warning-free triangular solves and keeps everything else.
    """


class ConvNet(Autocasting):
    """Coupling conditioner: 3x3 conv, 1x1 conv, 3x3 conv with ReLUs; the last layer starts at zero,
    so each coupling starts as the identity. ``(batch, in_channels, h, w) -> (batch, out_channels, h, w)``;
    trains under autocast when asked (:class:`~iflow.flows.autocast.Autocasting`)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int) -> None:
        super().__init__()
        last = nn.Conv2d(hidden, out_channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            last,
        )  # fmt: skip

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        return self.autocast(self.net, inputs)


def glow_step(channels: int, parity: int, hidden: int) -> list[Transform]:
    """One Glow step on ``(batch, channels, h, w)``: actnorm, 1x1 convolution, affine coupling."""
    coupling = AffineCoupling(alternating_mask(channels, parity), lambda c_in, c_out: ConvNet(c_in, c_out, hidden))
    return [ActNorm(channels), OneByOneConvolution(channels, identity_init=True), coupling]


def multiscale_glow(
    shape: tuple[int, int, int], scales: int = 2, steps: int = 4, hidden: int = 64
) -> MultiscaleCompositeTransform:
    """The multi-scale transform on images of ``shape = (C, H, W)``; H and W divisible by 2**scales."""
    c, h, w = shape
    if h % 2**scales or w % 2**scales:
        raise ValueError(f"image {h}x{w} cannot be squeezed {scales} times")
    multiscale = MultiscaleCompositeTransform(scales, split_dim=1)
    squeeze = SqueezeTransform()
    for _ in range(scales):
        c, h, w = squeeze.get_output_shape(c, h, w)
        layers: list[Transform] = [squeeze]
        for i in range(steps):
            layers += glow_step(c, i % 2, hidden)
        hidden_shape = multiscale.add_transform(CompositeTransform(layers), (c, h, w))
        if hidden_shape is not None:
            c, h, w = hidden_shape
    return multiscale


class ImageFlow(Transform):
    """A flow on flat vectors that runs an image transform on them.

    ``forward(x: (batch, C*H*W)) -> (z: (batch, C*H*W), logabsdet: (batch,))``.
    """

    def __init__(self, shape: tuple[int, int, int], transform: Transform) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.transform = transform

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        outputs, logabsdet = self.transform(inputs.reshape(-1, *self.shape))
        return outputs.reshape(inputs.shape[0], -1), logabsdet

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        outputs, logabsdet = self.transform.inverse(inputs)
        return outputs.reshape(inputs.shape[0], -1), logabsdet


def image_glow(
    shape: tuple[int, int, int], scales: int = 2, depth: int = 4, hidden: int = 64
) -> ImageFlow:
    """The multi-scale Glow on flat vectors of images of ``shape``; ``depth`` steps per scale."""
    return ImageFlow(shape, multiscale_glow(shape, scales, depth, hidden))
