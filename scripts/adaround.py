"""Learned int8 weight rounding (AdaRound) for the MiniFASNet rebuild: the liveness models' int8 files use it.

``round_weights`` is a build step (``liveness_models.py``: the "int8-weights" files). Run alone (in a venv with
``pip install -e .[models]``; reads ``../shared/data`` or ``EDGEFACE_DATA``, ~5 minutes per model on 2 cores)::

    python scripts/adaround.py

it prints, per liveness model, max |dp| against the PyTorch rebuild on the build's held-out crops for nearest and
learned rounding (weights alone in PyTorch; dynamic-range TFLite with float depthwise filters) and ms per crop:
the measurement behind the choice of float32 activations for the int8 files (docs/models.md).

The TFLite dynamic-range converter stores every convolution and matrix of 1,024 weights or more
(``MIN_QUANTIZED``) as int8 on a per-output-channel symmetric grid, scale = max|w| / 127, after the batch
norms are folded in (``minifasnet.build_function``). Rounding each weight to the nearest grid point moves
the networks' live probability by up to 0.07 near the decision boundary (docs/models.md). Here each such
layer's rounding (up or down, per weight) is learned instead, on the calibration crops only:

- layer by layer in forward order, the layer's input is taken from the network with the layers before it
  already rounded, and its target output from the float network (so each layer also absorbs the error of
  the layers before it);
- the output error of a 1x1 convolution or a matrix is a quadratic form of its weights, so it is computed
  from the inputs' second moments (``E[x_q x_q^T]``, ``E[x_q x_f^T]``) once per layer and each iteration
  costs one small matrix product, not a pass over the crops;
- AdaRound's rectified-sigmoid relaxation (Nagel et al. 2020, zeta 1.1, gamma -0.1) with its regulariser
  ``sum(1 - |2h - 1|^beta)``, beta annealed from 20 to 2 after a warm-up, then hard rounding;
- each channel's largest weight keeps its nearest rounding (+-127), so the converter computes the same
  per-channel scale and re-quantizes the written weights (``s * q`` divided back by the batch norm scale,
  which the translation folds in again to within float32 rounding) to the same integers.

Depthwise filters are not rounded: ``float_depthwise`` dequantizes them after conversion and
``exact_depthwise`` puts the float32 filters back. Nothing is random: fixed order, CPU float64.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from minifasnet import BN_EPS, MiniFASNet, build_function, load_torch, torch_probabilities
from tflite_export import read_graph, write_graph
from torch import nn

Array = npt.NDArray[Any]

MIN_QUANTIZED = 1024  # the converter leaves smaller weight tensors in float32
QMAX = 127
ZETA, GAMMA = 1.1, -0.1
ITERATIONS = 1000
WARMUP = 0.2  # share of the iterations without the regulariser
BETA = (20.0, 2.0)
LEARNING_RATE = 1e-2
REGULARISER = 0.01
BATCH = 64


@dataclass(frozen=True)
class Layer:
    """One layer the converter quantizes: its weight module and the batch norm folded into it (if any)."""

    name: str
    module: nn.Conv2d | nn.Linear
    bn: nn.BatchNorm2d | nn.BatchNorm1d | None


@dataclass(frozen=True)
class LayerResult:
    name: str
    weights: int
    flipped: float  # share of weights rounded away from the nearest grid point
    error_nearest: float  # output mean squared error with nearest rounding
    error_learned: float


def quantized_layers(net: MiniFASNet) -> list[Layer]:
    """The non-depthwise convolutions and matrices the converter stores as int8, in forward order."""
    layers = []
    modules = dict(net.named_modules())
    for name, module in net.named_modules():
        if (isinstance(module, nn.Conv2d) and module.groups == 1) or isinstance(module, nn.Linear):
            if module.weight.numel() < MIN_QUANTIZED:
                continue
            parent, _, leaf = name.rpartition(".")
            owner = modules[parent] if parent else net
            bn_name = {"conv": "bn", "fc1": "bn1", "fc2": "bn2", "linear": "bn"}.get(leaf)
            bn = getattr(owner, bn_name, None) if bn_name else None
            if isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1):
                raise ValueError(f"{name}: only 1x1 convolutions are rounded here, got {module.kernel_size}")
            layers.append(Layer(name, module, bn))
    return layers


def _gamma(bn: nn.BatchNorm2d | nn.BatchNorm1d | None, channels: int) -> torch.Tensor:
    if bn is None:
        return torch.ones(channels, dtype=torch.float64)
    assert bn.running_var is not None
    return bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + BN_EPS)


def _folded(layer: Layer) -> torch.Tensor:
    """The weight as the converter sees it: ``(out, in)``, batch norm scale folded in, float64."""
    w = layer.module.weight.detach().double().reshape(layer.module.weight.shape[0], -1)
    return w * _gamma(layer.bn, w.shape[0])[:, None]


def _rows(x: torch.Tensor) -> torch.Tensor:
    """A layer input ``(N, C[, H, W])`` as rows of input vectors ``(N*H*W, C)``."""
    if x.dim() == 4:
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    return x.reshape(-1, x.shape[-1])


class _InputCapturedError(Exception):
    """Raised by the capture hook: the rest of the network need not run once the layer's input is taken."""


def _inputs(net: MiniFASNet, module: nn.Module, crops: torch.Tensor) -> Iterator[torch.Tensor]:
    """``module``'s input rows on ``crops``, batch by batch (the rest of the network is not run)."""
    captured: list[torch.Tensor] = []

    def hook(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0])
        raise _InputCapturedError

    handle = module.register_forward_pre_hook(hook)
    try:
        for start in range(0, len(crops), BATCH):
            captured.clear()
            try:
                with torch.no_grad():
                    net(crops[start : start + BATCH])
            except _InputCapturedError:
                pass
            yield _rows(captured[0]).double()
    finally:
        handle.remove()


def _moments(
    float_net: MiniFASNet, float_module: nn.Module, rounded_net: MiniFASNet, rounded_module: nn.Module,
    crops: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``E[x_q x_q^T]``, ``E[x_q x_f^T]``, ``E[x_f x_f^T]`` over every input row of the calibration crops."""
    qq = qf = ff = None
    count = 0
    for xf, xq in zip(_inputs(float_net, float_module, crops), _inputs(rounded_net, rounded_module, crops),
                      strict=True):
        parts = (xq.T @ xq, xq.T @ xf, xf.T @ xf)
        qq, qf, ff = parts if qq is None else (qq + parts[0], qf + parts[1], ff + parts[2])  # type: ignore[operator]
        count += xf.shape[0]
    assert qq is not None and qf is not None and ff is not None
    return qq / count, qf / count, ff / count


def _error(w_q: torch.Tensor, w: torch.Tensor, qq: torch.Tensor, qf: torch.Tensor, ff: torch.Tensor) -> torch.Tensor:
    """Mean squared output error ``E|w_q x_q - w x_f|^2`` per output element, from the moments."""
    total = (w_q @ qq * w_q).sum() - 2 * (w_q @ qf * w).sum() + (w @ ff * w).sum()
    return total / w.shape[0]


def learn_rounding(
    w: torch.Tensor, qq: torch.Tensor, qf: torch.Tensor, ff: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer weights ``q`` and per-channel scales ``s`` for the folded weight ``w`` ``(out, in)``."""
    scale = w.abs().amax(dim=1, keepdim=True) / QMAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    ratio = w / scale
    floor = torch.floor(ratio)
    rest = (ratio - floor).clamp(1e-6, 1 - 1e-6)
    nearest = torch.round(ratio)
    fixed = torch.zeros_like(w, dtype=torch.bool)
    fixed[torch.arange(w.shape[0]), w.abs().argmax(dim=1)] = True  # keeps each channel's +-127, so its scale
    v = (-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1)).requires_grad_(True)
    optimiser = torch.optim.Adam([v], lr=LEARNING_RATE)
    warmup = int(ITERATIONS * WARMUP)

    def soft() -> torch.Tensor:
        h = (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)
        return torch.where(fixed, nearest, floor + h)

    base = float(_error(nearest * scale, w, qq, qf, ff))
    for i in range(ITERATIONS):
        optimiser.zero_grad()
        h = (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)
        loss = _error(soft() * scale, w, qq, qf, ff) / base
        if i >= warmup:
            beta = BETA[1] + (BETA[0] - BETA[1]) * (1 - (i - warmup) / (ITERATIONS - warmup))
            loss = loss + REGULARISER * (1 - (2 * h - 1).abs().pow(beta))[~fixed].sum()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
    with torch.no_grad():
        hard = torch.where(fixed, nearest, floor + (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA >= 0.5).double())
    return hard.clamp(-QMAX, QMAX), scale


def round_weights(net: MiniFASNet, calibration_bgr: Array) -> tuple[MiniFASNet, list[LayerResult]]:
    """A copy of ``net`` whose quantized layers hold learned-rounding int8 weights (as float ``s * q``)."""
    rounded = copy.deepcopy(net).eval()
    crops = torch.from_numpy(np.ascontiguousarray(calibration_bgr.transpose(0, 3, 1, 2))).float()
    results = []
    for layer, target in zip(quantized_layers(net), quantized_layers(rounded), strict=True):
        qq, qf, ff = _moments(net, layer.module, rounded, target.module, crops)
        w = _folded(layer)
        q, scale = learn_rounding(w, qq, qf, ff)
        nearest = torch.round(w / scale)
        results.append(LayerResult(
            layer.name, w.numel(), float((q != nearest).double().mean()),
            float(_error(nearest * scale, w, qq, qf, ff)), float(_error(q * scale, w, qq, qf, ff)),
        ))
        unfolded = (q * scale) / _gamma(target.bn, w.shape[0])[:, None]
        with torch.no_grad():
            target.module.weight.copy_(unfolded.reshape(target.module.weight.shape).float())
    return rounded, results


def exact_depthwise(model: bytes, float_model: bytes) -> bytes:
    """``model`` (after ``float_depthwise``) with every depthwise filter copied from ``float_model``, the same graph.

    ``float_depthwise`` restores ``s * q`` with the converter's nearest rounding; here the filters are the
    float32 ones, so the depthwise layers carry no rounding at all.
    """
    from tensorflow.lite.python import schema_py_generated as schema  # models extra only

    graphs = [read_graph(m) for m in (model, float_model)]
    filters = []
    for tree, codes in graphs:
        graph = tree.subgraphs[0]
        filters.append([graph.tensors[op.inputs[1]] for op in graph.operators
                        if codes[op.opcodeIndex] == schema.BuiltinOperator.DEPTHWISE_CONV_2D])
    if len(filters[0]) != len(filters[1]):
        raise ValueError("the two models do not have the same depthwise layers")
    for mine, theirs in zip(*filters, strict=True):
        if list(mine.shape) != list(theirs.shape) or mine.type != schema.TensorType.FLOAT32:
            raise ValueError(f"depthwise filter {list(mine.shape)} is not a float32 copy of {list(theirs.shape)}")
        graphs[0][0].buffers[mine.buffer].data = graphs[1][0].buffers[theirs.buffer].data
    return write_graph(graphs[0][0])


def main() -> None:
    from pathlib import Path

    from liveness_crops import detect_faces, split_photos
    from liveness_models import DATA_DIR, SOURCE_DIR, SOURCES
    from tflite_export import convert, float_depthwise, ms_per_chip, run

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("adaround")
    models_dir = Path(__file__).resolve().parent.parent / "models"  # the shipped face detector cuts the crops
    calibration_photos, check_photos = split_photos(DATA_DIR)
    calibration_faces = detect_faces(calibration_photos, models_dir)
    check_faces = detect_faces(check_photos, models_dir)
    for source in SOURCES:
        net = load_torch(SOURCE_DIR / source.file)
        calibration = calibration_faces.crops(source.crop_scale)
        crops = check_faces.crops(source.crop_scale)
        x = crops.astype(np.float32)
        reference = torch_probabilities(net, crops)
        float_model = convert(build_function(net), "none")
        nearest = float_depthwise(convert(build_function(net), "dynamic-range"))
        rounded, layers = round_weights(net, calibration)
        for r in layers:
            log.info("  %-28s %6d weights, %4.1f %% flipped, output MSE %.2e -> %.2e",
                     r.name, r.weights, 100 * r.flipped, r.error_nearest, r.error_learned)
        learned = exact_depthwise(float_depthwise(convert(build_function(rounded), "dynamic-range")), float_model)
        weights_only = float(np.abs(torch_probabilities(rounded, crops) - reference).max())
        log.info(
            "%s (%d check crops, %d calibration): nearest rounding, dynamic-range + float depthwise max|dp| %.4f "
            "%.2f ms; learned rounding, weights alone (PyTorch) %.4f, dynamic-range + float depthwise %.4f %.2f ms",
            source.architecture, len(crops), len(calibration),
            float(np.abs(run(nearest, x) - reference).max()), ms_per_chip(nearest, x[0], 1),
            weights_only, float(np.abs(run(learned, x) - reference).max()), ms_per_chip(learned, x[0], 1),
        )


if __name__ == "__main__":
    main()
