"""MiniFASNet (Silent-Face anti-spoofing) from its state dicts: a PyTorch rebuild and a TensorFlow translation.

The network definition is written from the state dicts' names and shapes, not copied: every block's channel
counts are read off its tensors, so the same code builds MiniFASNetV2 and MiniFASNetV1SE, and
``load_state_dict(strict=True)`` proves every tensor has a place.

Layout (80 x 80 input; ``Conv`` = conv (no bias) + batch norm + PReLU, ``Linear`` = conv + batch norm):
- ``conv1`` Conv 3x3/2 (80 -> 40), ``conv2_dw`` depthwise Conv 3x3/1;
- ``conv_23``, ``conv_34``, ``conv_45``: bottlenecks 1x1 Conv -> depthwise 3x3/2 Conv -> 1x1 Linear
  (40 -> 20 -> 10 -> 5);
- ``conv_3``, ``conv_4``, ``conv_5``: ``model.i`` residual bottlenecks of the same form at stride 1; in V1SE the last
  block of each stage squeezes and excites its output (``se_module``: global mean -> 1x1 conv -> BN -> ReLU ->
  1x1 conv -> BN -> sigmoid, multiplying the output) before the shortcut is added;
- ``conv_6_sep`` 1x1 Conv to 512, ``conv_6_dw`` depthwise 5x5 Linear (5 -> 1), flatten, ``linear`` 512 -> 128
  (no bias), ``bn`` BatchNorm1d, (dropout), ``prob`` 128 -> 3 (no bias).
Padding is 1 on every 3x3 (symmetric, as PyTorch pads) and 0 on the 5x5 and 1x1 layers.

The TF translation folds every batch norm into the convolution (or matrix) before it, pads explicitly (TF's
``SAME`` pads stride-2 layers asymmetrically), takes NHWC BGR 0..255 and ends in a softmax: the exported models
output the three class probabilities.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf
import torch
from torch import nn

Array = npt.NDArray[Any]
StateDict = dict[str, torch.Tensor]

INPUT_SIZE = 80
BN_EPS = 1e-5  # PyTorch's BatchNorm default; the state dicts carry no eps
PREFIX = "module."  # saved from nn.DataParallel

STAGES = ("conv_23", "conv_3", "conv_34", "conv_4", "conv_45", "conv_5")
_STRIDED = {"conv_23", "conv_34", "conv_45"}


def read_state_dict(path: Path) -> StateDict:
    """The state dict of a legacy-serialized ``.pth``, with the DataParallel prefix removed."""
    raw = torch.load(str(path), map_location="cpu", weights_only=True)
    if not all(key.startswith(PREFIX) for key in raw):
        raise ValueError(f"{path}: expected every key to start with {PREFIX!r}")
    return {key[len(PREFIX) :]: value for key, value in raw.items()}


class ConvBlock(nn.Module):
    """conv (no bias) + BatchNorm2d (+ PReLU)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int, *, prelu: bool) -> None:
        super().__init__()
        pad = 1 if kernel == 3 else 0
        self.conv = nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = nn.PReLU(cout) if prelu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.prelu(x) if self.prelu is not None else x


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(reduced)
        self.fc2 = nn.Conv2d(reduced, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean(dim=(2, 3), keepdim=True)
        w = torch.relu(self.bn1(self.fc1(w)))
        return x * torch.sigmoid(self.bn2(self.fc2(w)))


class Bottleneck(nn.Module):
    """1x1 Conv -> depthwise 3x3 Conv -> 1x1 Linear, with an optional SE and a shortcut when ``residual``."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, *, residual: bool, se: int | None) -> None:
        super().__init__()
        self.conv = ConvBlock(cin, mid, 1, 1, 1, prelu=True)
        self.conv_dw = ConvBlock(mid, mid, 3, stride, mid, prelu=True)
        self.project = ConvBlock(mid, cout, 1, 1, 1, prelu=False)
        self.se_module = SqueezeExcite(cout, se) if se is not None else None
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        if self.se_module is not None:
            y = self.se_module(y)
        return x + y if self.residual else y


def _bottleneck(sd: StateDict, prefix: str, stride: int, *, residual: bool) -> Bottleneck:
    mid, cin = sd[f"{prefix}.conv.conv.weight"].shape[:2]
    cout = sd[f"{prefix}.project.conv.weight"].shape[0]
    se_key = f"{prefix}.se_module.fc1.weight"
    se = int(sd[se_key].shape[0]) if se_key in sd else None
    return Bottleneck(int(cin), int(mid), int(cout), stride, residual=residual, se=se)


class MiniFASNet(nn.Module):
    """MiniFASNetV2 / V1SE, shaped by a state dict (see the module docstring)."""

    def __init__(self, sd: StateDict) -> None:
        super().__init__()
        c1 = int(sd["conv1.conv.weight"].shape[0])
        self.conv1 = ConvBlock(3, c1, 3, 2, 1, prelu=True)
        self.conv2_dw = ConvBlock(c1, c1, 3, 1, c1, prelu=True)
        for stage in STAGES:
            if stage in _STRIDED:
                setattr(self, stage, _bottleneck(sd, stage, 2, residual=False))
            else:
                count = 1 + max(int(m.group(1)) for k in sd if (m := re.match(rf"{stage}\.model\.(\d+)\.", k)))
                blocks = [_bottleneck(sd, f"{stage}.model.{i}", 1, residual=True) for i in range(count)]
                setattr(self, stage, _Residual(blocks))
        sep = int(sd["conv_6_sep.conv.weight"].shape[0])
        self.conv_6_sep = ConvBlock(int(sd["conv_6_sep.conv.weight"].shape[1]), sep, 1, 1, 1, prelu=True)
        k = int(sd["conv_6_dw.conv.weight"].shape[-1])
        self.conv_6_dw = ConvBlock(sep, sep, k, 1, sep, prelu=False)
        emb = int(sd["linear.weight"].shape[0])
        self.linear = nn.Linear(sep, emb, bias=False)
        self.bn = nn.BatchNorm1d(emb)
        self.prob = nn.Linear(emb, int(sd["prob.weight"].shape[0]), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2_dw(self.conv1(x))
        for stage in STAGES:
            x = getattr(self, stage)(x)
        x = self.conv_6_dw(self.conv_6_sep(x)).flatten(1)
        return self.prob(self.bn(self.linear(x)))  # logits; dropout is identity at inference


class _Residual(nn.Module):
    def __init__(self, blocks: list[Bottleneck]) -> None:
        super().__init__()
        self.model = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out


def load_torch(path: Path) -> MiniFASNet:
    """The rebuilt network with the file's weights, every tensor matched (``strict=True``), in eval mode."""
    sd = read_state_dict(path)
    net = MiniFASNet(sd)
    net.load_state_dict(sd, strict=True)
    return net.eval()


def torch_probabilities(net: MiniFASNet, crops_bgr: Array) -> Array:
    """Softmax probabilities ``(N, 3)`` of ``(N, 80, 80, 3)`` BGR uint8 crops (input as the source feeds it)."""
    x = torch.from_numpy(np.ascontiguousarray(crops_bgr.transpose(0, 3, 1, 2))).float()
    with torch.no_grad():
        return torch.softmax(net(x), dim=1).numpy()


# --- TensorFlow translation -------------------------------------------------------------------------


def _np(t: torch.Tensor) -> Array:
    return t.detach().cpu().numpy().astype(np.float64)


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d | nn.BatchNorm1d) -> tuple[Array, Array]:
    """Conv weight ``(out, in/groups, kh, kw)`` and bias with the batch norm folded in."""
    assert bn.running_mean is not None and bn.running_var is not None
    gamma = _np(bn.weight) / np.sqrt(_np(bn.running_var) + BN_EPS)
    weight = _np(conv.weight) * gamma[:, None, None, None]
    bias = _np(bn.bias) - _np(bn.running_mean) * gamma
    return weight, bias


def _const(a: Array) -> tf.Tensor:
    return tf.constant(np.ascontiguousarray(a), dtype=tf.float32)


def _tf_conv(block: ConvBlock) -> Callable[[tf.Tensor], tf.Tensor]:
    conv = block.conv
    weight, bias = _fold(conv, block.bn)
    stride = int(conv.stride[0])
    pad = int(conv.padding[0])  # type: ignore[index]
    depthwise = conv.groups > 1
    if depthwise and conv.groups != conv.out_channels:
        raise ValueError(f"grouped conv with {conv.groups} groups is not depthwise")
    # PyTorch (out, in, kh, kw) -> TF (kh, kw, in, out); depthwise (c, 1, kh, kw) -> (kh, kw, c, 1).
    kernel = _const(weight.transpose(2, 3, 0, 1) if depthwise else weight.transpose(2, 3, 1, 0))
    b = _const(bias)
    alpha = _const(_np(block.prelu.weight).reshape(1, 1, -1)) if block.prelu is not None else None

    def apply(x: tf.Tensor) -> tf.Tensor:
        if pad:
            x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        if depthwise:
            y = tf.nn.depthwise_conv2d(x, kernel, [1, stride, stride, 1], "VALID")
        else:
            y = tf.nn.conv2d(x, kernel, stride, "VALID")
        y = y + b
        if alpha is not None:
            # Keras's PReLU form, which the TFLite converter fuses into one PRELU op.
            y = tf.nn.relu(y) + (-alpha * tf.nn.relu(-y))
        return y

    return apply


def _tf_se(se: SqueezeExcite) -> Callable[[tf.Tensor], tf.Tensor]:
    w1, b1 = _fold(se.fc1, se.bn1)
    w2, b2 = _fold(se.fc2, se.bn2)
    m1, c1 = _const(w1[:, :, 0, 0].T), _const(b1)
    m2, c2 = _const(w2[:, :, 0, 0].T), _const(b2)

    def apply(x: tf.Tensor) -> tf.Tensor:
        w = tf.reduce_mean(x, axis=[1, 2])
        w = tf.nn.relu(tf.matmul(w, m1) + c1)
        w = tf.sigmoid(tf.matmul(w, m2) + c2)
        return x * w[:, None, None, :]

    return apply


def _tf_bottleneck(block: Bottleneck) -> Callable[[tf.Tensor], tf.Tensor]:
    steps = [_tf_conv(block.conv), _tf_conv(block.conv_dw), _tf_conv(block.project)]
    se = _tf_se(block.se_module) if block.se_module is not None else None

    def apply(x: tf.Tensor) -> tf.Tensor:
        y = x
        for step in steps:
            y = step(y)
        if se is not None:
            y = se(y)
        return x + y if block.residual else y

    return apply


def build_function(net: MiniFASNet) -> Callable[[tf.Tensor], tf.Tensor]:
    """A ``tf.function`` from ``[1, 80, 80, 3]`` BGR 0..255 float32 to ``[1, 3]`` class probabilities."""
    layers: list[Callable[[tf.Tensor], tf.Tensor]] = [_tf_conv(net.conv1), _tf_conv(net.conv2_dw)]
    for stage in STAGES:
        module = getattr(net, stage)
        blocks = list(module.model) if isinstance(module, _Residual) else [module]
        layers.extend(_tf_bottleneck(b) for b in blocks)
    layers += [_tf_conv(net.conv_6_sep), _tf_conv(net.conv_6_dw)]
    # linear (no bias) followed by BatchNorm1d folds into one matrix and bias.
    bn = net.bn
    assert bn.running_mean is not None and bn.running_var is not None
    gamma = _np(bn.weight) / np.sqrt(_np(bn.running_var) + BN_EPS)
    fc = _const((_np(net.linear.weight) * gamma[:, None]).T)
    fc_bias = _const(_np(bn.bias) - _np(bn.running_mean) * gamma)
    prob = _const(_np(net.prob.weight).T)

    @tf.function(input_signature=[tf.TensorSpec([1, INPUT_SIZE, INPUT_SIZE, 3], tf.float32)])
    def classify(x: tf.Tensor) -> tf.Tensor:
        for layer in layers:
            x = layer(x)
        x = tf.reshape(x, [1, -1])
        return tf.nn.softmax(tf.matmul(tf.matmul(x, fc) + fc_bias, prob))

    return classify  # type: ignore[no-any-return]
