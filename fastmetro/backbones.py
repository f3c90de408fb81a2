"""CNN backbones: 224 x 224 crop in, 2048 x 7 x 7 features out.

- resnet50: torchvision's ResNet-50 without avgpool and fc, as an nn.Sequential (keys backbone.0.,
  backbone.1., backbone.4.0. ... exactly as the official model, which builds it the same way).
- hrnet-w64: the classification HRNet "featmaps" variant (HRNet-W64-C: stage modules 1/1/4/3,
  branch channels 64/128/256/512, the incremental/downsampling head to 2048 channels). Module names
  follow the official HRNet code so that checkpoints load with no renaming; the unused ImageNet
  classifier is kept because official checkpoints contain it.
"""
from __future__ import annotations

import torchvision
from torch import Tensor, nn

BN_MOMENTUM = 0.1


def resnet50() -> nn.Module:
    net = torchvision.models.resnet50(weights=None)
    return nn.Sequential(*list(net.children())[:-2])


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=BN_MOMENTUM)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = _bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = _bn(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, kernel_size=1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = _bn(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


def _make_layer(block, cin: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    downsample = None
    if stride != 1 or cin != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(cin, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
            _bn(planes * block.expansion),
        )
    layers = [block(cin, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches at several resolutions, then every branch fused into every other."""

    def __init__(self, channels: list[int], blocks: int):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            _make_layer(BasicBlock, c, c, blocks) for c in channels
        )
        self.fuse_layers = None if n == 1 else nn.ModuleList(
            nn.ModuleList(self._fuse(channels, i, j) for j in range(n)) for i in range(n)
        )
        self.relu = nn.ReLU(False)

    @staticmethod
    def _fuse(channels: list[int], i: int, j: int) -> nn.Module | None:
        if j == i:
            return None
        if j > i:  # lower resolution to higher: 1x1 conv, then nearest upsampling
            return nn.Sequential(
                nn.Conv2d(channels[j], channels[i], 1, 1, 0, bias=False),
                _bn(channels[i]),
                nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
            )
        steps = []  # higher resolution to lower: strided 3x3 convs
        for k in range(i - j):
            last = k == i - j - 1
            cout = channels[i] if last else channels[j]
            conv = [nn.Conv2d(channels[j], cout, 3, 2, 1, bias=False), _bn(cout)]
            steps.append(nn.Sequential(*conv) if last else nn.Sequential(*conv, nn.ReLU(False)))
        return nn.Sequential(*steps)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, fuse in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else fuse[0](xs[0])
            for j in range(1, len(xs)):
                y = y + (xs[j] if i == j else fuse[j](xs[j]))
            out.append(self.relu(y))
        return out


def _transition(cin: list[int], cout: list[int]) -> nn.ModuleList:
    layers: list[nn.Module | None] = []
    for i, c in enumerate(cout):
        if i < len(cin):
            layers.append(
                None if c == cin[i] else nn.Sequential(
                    nn.Conv2d(cin[i], c, 3, 1, 1, bias=False), _bn(c), nn.ReLU(inplace=True)
                )
            )
        else:
            steps = []
            for k in range(i + 1 - len(cin)):
                out = c if k == i - len(cin) else cin[-1]
                steps.append(nn.Sequential(
                    nn.Conv2d(cin[-1], out, 3, 2, 1, bias=False), _bn(out), nn.ReLU(inplace=True)
                ))
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


class HRNetFeatures(nn.Module):
    """HRNet-W{width} classification network returning its 2048-channel feature map (stride 32)."""

    STAGE_MODULES = (1, 4, 3)  # stages 2, 3, 4 (stage 1 is one bottleneck layer)

    def __init__(self, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = _bn(64)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = _bn(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _make_layer(Bottleneck, 64, 64, 4)

        widths = [width * 2**i for i in range(4)]
        pre = [256]
        for stage, modules in enumerate(self.STAGE_MODULES, start=2):
            channels = widths[:stage]
            setattr(self, f"transition{stage - 1}", _transition(pre, channels))
            setattr(self, f"stage{stage}", nn.Sequential(
                *[HighResolutionModule(list(channels), 4) for _ in range(modules)]
            ))
            pre = channels

        head = [32, 64, 128, 256]
        self.incre_modules = nn.ModuleList(
            _make_layer(Bottleneck, c, h, 1) for c, h in zip(pre, head)
        )
        self.downsamp_modules = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(head[i] * 4, head[i + 1] * 4, kernel_size=3, stride=2, padding=1),
                _bn(head[i + 1] * 4),
                nn.ReLU(inplace=True),
            )
            for i in range(3)
        )
        self.final_layer = nn.Sequential(
            nn.Conv2d(head[3] * 4, 2048, kernel_size=1, stride=1, padding=0),
            _bn(2048),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(2048, 1000)  # unused; present in official checkpoints

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        for stage in (2, 3, 4):
            transition = getattr(self, f"transition{stage - 1}")
            xs = []
            for i, t in enumerate(transition):
                if t is None:
                    xs.append(ys[i])
                else:  # new branches grow from the lowest resolution
                    xs.append(t(ys[i] if i < len(ys) else ys[-1]))
            ys = getattr(self, f"stage{stage}")(xs)
        y = self.incre_modules[0](ys[0])
        for i, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[i + 1](ys[i + 1]) + down(y)
        return self.final_layer(y)


def build_backbone(name: str) -> nn.Module:
    if name == "resnet50":
        return resnet50()
    if name == "hrnet-w64":
        return HRNetFeatures(64)
    raise ValueError(f"unknown backbone {name!r}: expected 'resnet50' or 'hrnet-w64'")
