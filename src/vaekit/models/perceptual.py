"""LPIPS (Zhang et al. 2018, version 0.1, VGG variant): a perceptual distance the adversarial objective can add to its
reconstruction term, as taming-transformers and latent diffusion do.

Its weights cannot be downloaded here, so the user supplies two files in one folder (`adversarial.lpips`):
- `vgg16.pth`: torchvision's ImageNet VGG16 state dict (torchvision names it vgg16-397923af.pth; either name
  works), of which the 13 convolutions of `features` are read;
- `lpips_vgg.pth`: the LPIPS package's linear heads (lpips/weights/v0.1/vgg.pth; either name works), 1x1
  convolutions lin0..lin4 over the five VGG taps.

d(x, y) = sum_l mean_hw( w_l . (f_l(x) / ||f_l(x)|| - f_l(y) / ||f_l(y)||)^2 ), f_l the VGG activations after
relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 of the images scaled by LPIPS's fixed shift and scale; the norms are
over channels. The network is frozen: it gives gradients to the images, never to itself.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from vaekit.errors import ConfigError

VGG16: list[int | None] = [64, 64, None, 128, 128, None, 256, 256, 256, None, 512, 512, 512, None, 512, 512, 512]
# None: a 2x2 max pool
TAPS = (3, 8, 15, 22, 29)  # indices in torchvision's vgg16.features of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
FILES = {"vgg16.pth": ("vgg16.pth", "vgg16-397923af.pth"), "lpips_vgg.pth": ("lpips_vgg.pth", "vgg.pth")}


class LPIPS(nn.Module):
    """images (B, C, H, W) in [0, 1], C 1 or 3 (grey images are repeated to RGB) -> (B,) distances."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in VGG16:
            if width is None:
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
                channels = width
        self.features = nn.Sequential(*layers)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in (64, 128, 256, 512, 512))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def taps(self, x: Tensor) -> list[Tensor]:
        """The five VGG activations of images x in [0, 1], unit-normalized over channels."""
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        h = (2 * x - 1 - self.get_buffer("shift")) / self.get_buffer("scale")
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in TAPS:
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        total = x.new_zeros(x.shape[0])
        for lin, a, b in zip(self.lins, self.taps(x), self.taps(y), strict=True):
            total = total + lin((a - b).pow(2)).mean((1, 2, 3))
        return total

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)  # always in evaluation mode (LPIPS's heads drop out only when it is trained)


def lpips_files(folder: str | Path) -> dict[str, Path]:
    """The two weight files in `folder`, by their role; a one-line error naming the one that is missing."""
    found = {}
    for name, candidates in FILES.items():
        path = next((Path(folder) / c for c in candidates if (Path(folder) / c).is_file()), None)
        if path is None:
            raise ConfigError(
                f"adversarial.lpips={str(folder)!r} has no {' or '.join(candidates)}: LPIPS needs torchvision's VGG16 "
                "weights (vgg16-397923af.pth) and the lpips package's lpips/weights/v0.1/vgg.pth there"
            )
        found[name] = path
    return found


def load_lpips(folder: str | Path) -> LPIPS:
    """The LPIPS network with the weight files in `folder`; a one-line error naming what is missing or unreadable."""
    found = {name: _read(path) for name, path in lpips_files(folder).items()}
    net = LPIPS()
    vgg = {k.removeprefix("features."): v for k, v in found["vgg16.pth"].items() if k.startswith("features.")}
    heads = {f"{k[3]}.weight": v for k, v in found["lpips_vgg.pth"].items() if k.startswith("lin")}
    try:
        net.features.load_state_dict(vgg)
        net.lins.load_state_dict(heads)
    except RuntimeError as err:
        first = str(err).splitlines()[0][:160]
        raise ConfigError(f"the LPIPS weights in {str(folder)!r} do not fit VGG16 and its heads ({first})") from None
    return net


def _read(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which
        raise ConfigError(f"cannot read LPIPS weights {str(path)!r} ({type(err).__name__}); fetch it again") from None
    if not isinstance(state, dict):
        raise ConfigError(f"LPIPS weights {str(path)!r} hold no state dict")
    return state
