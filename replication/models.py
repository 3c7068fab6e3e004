"""Firefly's CIFAR networks (VGG-11/16/19 with BN, MobileNetV1) built from explicit per-layer widths.

Every model lists its growable `units`: a conv layer whose output channels (neurons) can be added, with the BN that
normalises them, the depthwise layers that must follow its width, the module whose output carries those channels
and the one module that consumes them. `growth/` only ever touches models through this list.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

# Firefly's CIFAR VGG configurations: numbers are conv widths, "M" a 2x2 max-pool (Firefly code, paper-facts.md).
VGG_CFG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
# CIFAR MobileNetV1 as used by Firefly: a 32-wide stem then (width, stride) pointwise blocks.
MOBILENET_CFG = [64, (128, 2), 128, (256, 2), 256, (512, 2), 512, 512, 512, 512, 512, (1024, 2), 1024]


@dataclass
class Unit:
    """One growable layer: `conv` makes the neurons, `consumer` reads them (its input dim 1)."""
    name: str
    conv: nn.Conv2d
    bn: nn.BatchNorm2d
    consumer: nn.Module
    output: nn.Module  # the module whose output holds exactly these channels as the consumer reads them
    followers: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = field(default_factory=list)  # depthwise, same width

    @property
    def width(self) -> int:
        return self.conv.out_channels


def _birth_buffer(conv: nn.Conv2d) -> None:
    # Growth round in which each output channel was born; saved in the state dict with the weights.
    conv.register_buffer("birth_round", torch.zeros(conv.out_channels, dtype=torch.long))


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = act()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class VGG(nn.Module):
    def __init__(self, cfg_name: str, widths: list[int], num_classes: int = 10, init: str = "default"):
        super().__init__()
        layout = VGG_CFG[cfg_name]
        n_convs = sum(1 for v in layout if v != "M")
        if len(widths) != n_convs:
            raise ValueError(f"{cfg_name} has {n_convs} conv layers; got {len(widths)} widths")
        self.cfg_name = cfg_name
        self.blocks = nn.ModuleList()
        self.pool_after: list[int] = []  # block indices followed by a max-pool
        c_in, i = 3, 0
        for v in layout:
            if v == "M":
                self.pool_after.append(i - 1)
                continue
            self.blocks.append(ConvBlock(c_in, widths[i]))
            _birth_buffer(self.blocks[-1].conv)
            c_in, i = widths[i], i + 1
        self.pool = nn.MaxPool2d(2)
        # Firefly: no FC layers; a 1x1 conv with bias maps the last width to the classes.
        self.classifier = nn.Conv2d(c_in, num_classes, 1, bias=True)
        init_weights(self, init)

    def forward(self, x):
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.pool_after:
                x = self.pool(x)
        return self.classifier(x).flatten(1)  # spatial map is 1x1 after five pools at 32x32 input

    def selection_groups(self) -> list[list[int]]:
        return [list(range(len(self.blocks)))]  # Firefly selects over all VGG layers together

    def units(self) -> list[Unit]:
        consumers = [b.conv for b in self.blocks[1:]] + [self.classifier]
        return [Unit(f"conv{i}", b.conv, b.bn, consumers[i], b.act) for i, b in enumerate(self.blocks)]

    def cam_layer(self) -> nn.Module:
        return self.blocks[-1]


class MobileNetV1(nn.Module):
    def __init__(self, widths: list[int], num_classes: int = 10, strides: list[int] | None = None,
                 init: str = "default"):
        super().__init__()
        if len(widths) != 1 + len(MOBILENET_CFG):
            raise ValueError(f"MobileNetV1 has {1 + len(MOBILENET_CFG)} growable layers; got {len(widths)}")
        strides = strides or [1] + [v[1] if isinstance(v, tuple) else 1 for v in MOBILENET_CFG]
        act = nn.SiLU  # Firefly's MobileNetV1 uses swish (= SiLU)
        self.stem = ConvBlock(3, widths[0], act=act)
        _birth_buffer(self.stem.conv)
        self.dw = nn.ModuleList()
        self.pw = nn.ModuleList()
        for k in range(len(MOBILENET_CFG)):
            c_in, c_out = widths[k], widths[k + 1]
            self.dw.append(ConvBlock(c_in, c_in, 3, strides[k + 1], groups=c_in, act=act))
            self.pw.append(ConvBlock(c_in, c_out, 1, act=act))
            _birth_buffer(self.pw[-1].conv)
        self.classifier = nn.Linear(widths[-1], num_classes)
        init_weights(self, init)

    def forward(self, x):
        x = self.stem(x)
        for dw, pw in zip(self.dw, self.pw):
            x = pw(dw(x))
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)

    def units(self) -> list[Unit]:
        makers = [self.stem] + list(self.pw)
        units = []
        for k, block in enumerate(makers):
            if k < len(self.dw):  # the next depthwise layer has this width and feeds the next pointwise
                dw = self.dw[k]
                units.append(Unit(f"pw{k}", block.conv, block.bn, self.pw[k].conv, dw.act, [(dw.conv, dw.bn)]))
            else:
                units.append(Unit(f"pw{k}", block.conv, block.bn, self.classifier, block.act))
        return units

    def cam_layer(self) -> nn.Module:
        return self.pw[-1]

    def selection_groups(self) -> list[list[int]]:
        # Firefly's two groups of pointwise layers, each with its own quota: {stem, 1, 2, 3} and {4, ..., 13}
        # (FF:model.py:87, layer2split_group).
        return [list(range(4)), list(range(4, 1 + len(MOBILENET_CFG)))]


def init_weights(model: nn.Module, init: str = "default") -> None:
    """`default`: PyTorch's own initialisation, which Firefly's code keeps (it has no init code); `kaiming`:
    He-normal fan_out on every conv. The latter gives the 1x1 classifier std sqrt(2/classes) at any input width,
    which blew up the early layers in the first steps at lr 0.1 (docs/results.md)."""
    if init == "default":
        return
    if init != "kaiming":
        raise ValueError(f"unknown init {init!r}; valid: default, kaiming")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def full_widths(arch: str) -> list[int]:
    if arch == "mobilenetv1":
        return [32] + [v[0] if isinstance(v, tuple) else v for v in MOBILENET_CFG]
    return [v for v in VGG_CFG[arch] if v != "M"]


def initial_widths(cfg) -> list[int]:
    """Widths a run starts from: explicit `widths`, uniform `start_width`, or the full widths x `width_scale`."""
    full = full_widths(cfg.arch)
    if cfg.widths:
        if len(cfg.widths) != len(full):
            raise ValueError(f"{cfg.arch} has {len(full)} growable layers; widths has {len(cfg.widths)}")
        return list(cfg.widths)
    if cfg.start_width is not None:
        return [cfg.start_width] * len(full)
    return [max(1, round(w * cfg.width_scale)) for w in full]


def build_model(arch: str, widths: list[int], num_classes: int, init: str = "default") -> nn.Module:
    if arch == "mobilenetv1":
        return MobileNetV1(list(widths), num_classes, init=init)
    if arch not in VGG_CFG:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join([*VGG_CFG, 'mobilenetv1'])}")
    return VGG(arch, list(widths), num_classes, init=init)


def widths_of(model: nn.Module) -> list[int]:
    return [u.width for u in model.units()]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, image_size: int = 32) -> int:
    """Forward multiply-accumulates per image of all conv and linear layers (BN, activations, pools ignored)."""
    macs = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs.append(output.numel() // output.shape[0] * k)
        else:
            macs.append(module.in_features * module.out_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(sum(macs))
