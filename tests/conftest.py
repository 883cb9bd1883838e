"""Shared models and inputs: small enough for a 2-core CI, real enough to mean something."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pacs import orthanc, pacs  # noqa: F401  (fixtures: a real PACS, Orthanc with DICOMweb)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson r of two maps of any shape."""
    return torch.corrcoef(torch.stack([a.detach().flatten().double(), b.detach().flatten().double()]))[0, 1].item()


class GapNet(nn.Module):
    """conv -> ReLU -> conv -> ReLU(inplace) -> global average pooling -> linear, any dimensionality.

    The head is exactly GAP + one linear layer, the case where CAM, Grad-CAM, HiResCAM and
    XGrad-CAM must agree; the in-place ReLU after the target layer is the case that breaks
    full-backward module hooks.
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 3, width: int = 8) -> None:
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
        pool = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[spatial_dims]
        self.features = nn.Sequential(
            conv(in_channels, width, 3, padding=1),
            nn.ReLU(),
            conv(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        self.pool = pool(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class SwinClassifier(nn.Module):
    """MONAI's Swin encoder (SwinUNETR's), global average pooling of its last, normalised stage, one linear
    layer: a transformer whose stages are channels-last with a LayerNorm before the head."""

    def __init__(self, embed_dim: int = 6) -> None:
        super().__init__()
        from monai.networks.nets.swin_unetr import SwinTransformer

        self.encoder = SwinTransformer(
            in_chans=1, embed_dim=embed_dim, window_size=(4, 4, 4), patch_size=(2, 2, 2), depths=(1, 1, 1, 1),
            num_heads=(1, 1, 2, 2), spatial_dims=3,
        )  # fmt: skip
        self.fc = nn.Linear(16 * embed_dim, 2)  # four patch mergings double the channels each time

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(x, normalize=True)[-1].mean((2, 3, 4)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_identifiers_from_other_tests():
    """Each test starts with no identifying values registered: a process remembers those of every scan
    it read (volcam.errors.scrub), and one test's patient name must not remove words from another's lines."""
    from volcam.errors import forget_identifiers

    forget_identifiers()
    yield
    forget_identifiers()


@pytest.fixture
def gapnet3d() -> GapNet:
    return GapNet(3).eval()


@pytest.fixture(scope="module")
def resnet18_3d() -> nn.Module:
    from monai.networks.nets import resnet18

    torch.manual_seed(0)
    return resnet18(spatial_dims=3, n_input_channels=1, num_classes=2).eval()
