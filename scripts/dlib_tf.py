"""Rebuild a parsed dlib network (:mod:`dlib_xml`) as a TensorFlow function with constant weights.

Translation rules, each checked against dlib's own descriptors by ``build_models.py``:
- dlib's ``con``/``max_pool``/``avg_pool`` pad by the attribute ``padding_y/x``; this network uses 1 for
  its stride-1 3x3 convolutions (TF ``SAME``) and 0 for every stride-2 op (TF ``VALID``), so spatial sizes go
  150 -> 72 (conv 7x7/2) -> 35 (max pool 3x3/2) -> 17 -> 8 -> 3 -> 1 along the convolution path;
- ``add_prev`` of differently shaped tensors zero-pads both to the larger size in rows, columns and channels,
  top-left aligned: the 2x2/2 average-pooled shortcut is 4x4 and 2x2 where the strided conv gives 3x3 and 1x1,
  and it keeps the narrower channel count (32 -> 64 -> 128 -> 256) with the extra channels taken as zero;
- ``affine_con`` (dlib's inference-time batch norm) is folded into the convolution before it;
- filters go from dlib's ``(out, in, kh, kw)`` to TF's ``(kh, kw, in, out)``; dlib correlates like TF (no flip).
The function takes the already normalised chip ``(rgb - mean) / 256`` and returns dlib's raw descriptor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf
from dlib_xml import DlibNet, DlibXmlError, Layer

Array = npt.NDArray[Any]  # element types vary (uint8 chips, float32 tensors); shapes are in the docstrings


@dataclass(frozen=True)
class _Conv:
    kernel: Array  # (kh, kw, in, out)
    bias: Array
    stride: int
    padding: str


def _conv_from(layer: Layer, in_channels: int) -> _Conv:
    out = layer.int_attr("num_filters")
    kh, kw = layer.int_attr("nr"), layer.int_attr("nc")
    stride, pad = layer.int_attr("stride_y"), layer.int_attr("padding_y")
    if (stride, pad) != (layer.int_attr("stride_x"), layer.int_attr("padding_x")):
        raise DlibXmlError(f"anisotropic conv is not supported: {layer.attrs}")
    assert layer.params is not None
    n_weights = out * in_channels * kh * kw
    use_bias = layer.attrs.get("use_bias", "true") == "true"
    if layer.params.size != n_weights + (out if use_bias else 0):
        raise DlibXmlError(f"conv {layer.attrs} has {layer.params.size} numbers for {in_channels} input channels")
    kernel = layer.params[:n_weights].reshape(out, in_channels, kh, kw).transpose(2, 3, 1, 0)
    bias = layer.params[n_weights:] if use_bias else np.zeros(out, np.float32)
    return _Conv(np.ascontiguousarray(kernel), bias.copy(), stride, _tf_padding(kh, stride, pad))


def _tf_padding(kernel: int, stride: int, pad: int) -> str:
    if pad == 0:
        return "VALID"
    if stride == 1 and pad == kernel // 2:
        return "SAME"
    raise DlibXmlError(f"padding {pad} for kernel {kernel} stride {stride} has no TF equivalent here")


def _pad_to(x: tf.Tensor, shape: tuple[int, int, int]) -> tf.Tensor:
    pads = [[0, 0]] + [[0, want - int(have)] for have, want in zip(x.shape[1:], shape, strict=True)]
    return x if all(after == 0 for _, after in pads) else tf.pad(x, pads)


def _add_prev(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    shape = (
        max(int(a.shape[1]), int(b.shape[1])),
        max(int(a.shape[2]), int(b.shape[2])),
        max(int(a.shape[3]), int(b.shape[3])),
    )
    return _pad_to(a, shape) + _pad_to(b, shape)


def _pool(layer: Layer, x: tf.Tensor, kind: str) -> tf.Tensor:
    size = layer.int_attr("nr")
    if size == 0:  # avg_pool_everything
        return tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    stride, pad = layer.int_attr("stride_y"), layer.int_attr("padding_y")
    padding = _tf_padding(size, stride, pad)
    if kind == "max_pool":
        return tf.nn.max_pool2d(x, ksize=size, strides=stride, padding=padding)
    # The same average as a depthwise conv with weights 1/(k*k): LiteRT's XNNPACK delegate runs int8
    # depthwise convs but not int8 AVERAGE_POOL_2D, which split the int8 graph into 5 partitions and
    # made it slower than float. 1/4 is exact in int8 (127 at scale 1/508), so nothing is lost.
    channels = int(x.shape[3])
    weights = np.full((size, size, channels, 1), 1.0 / (size * size), np.float32)
    return tf.nn.depthwise_conv2d(x, tf.constant(weights), strides=[1, stride, stride, 1], padding=padding)


def _fold_affines(net: DlibNet) -> list[Layer | _Conv]:
    """Turn each ``con`` (+ following ``affine_con``) into one :class:`_Conv`; other layers pass through."""
    steps: list[Layer | _Conv] = []
    channels = 3
    tags: dict[str, int] = {}
    for layer in net.layers:
        if layer.kind == "con":
            conv = _conv_from(layer, channels)
            channels = conv.kernel.shape[3]
            steps.append(conv)
        elif layer.kind == "affine_con":
            assert layer.params is not None
            prev = steps[-1] if steps else None
            if not isinstance(prev, _Conv) or layer.params.size != 2 * channels:
                raise DlibXmlError("affine_con must follow a conv with matching channel count")
            gamma, beta = layer.params[:channels], layer.params[channels:]
            steps[-1] = _Conv(prev.kernel * gamma, prev.bias * gamma + beta, prev.stride, prev.padding)
        else:
            if layer.kind == "tag":
                tags[layer.attrs["id"]] = channels
            elif layer.kind == "skip":
                channels = tags[layer.attrs["id"]]
            elif layer.kind == "add_prev":
                channels = max(channels, tags[layer.attrs["tag"]])
            steps.append(layer)
    return steps


def build_function(net: DlibNet) -> Callable[[tf.Tensor], tf.Tensor]:
    """A ``tf.function`` mapping normalised chips ``[N, H, W, 3]`` to dlib's raw descriptors ``[N, 128]``."""
    steps = _fold_affines(net)
    height, width = net.input_size

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name="chip")])
    def embed(chip: tf.Tensor) -> tf.Tensor:
        x = chip
        tags: dict[str, tf.Tensor] = {}
        for step in steps:
            if isinstance(step, _Conv):
                x = tf.nn.conv2d(x, tf.constant(step.kernel), strides=step.stride, padding=step.padding)
                x = tf.nn.bias_add(x, tf.constant(step.bias))
            elif step.kind == "relu":
                x = tf.nn.relu(x)
            elif step.kind in ("max_pool", "avg_pool"):
                x = _pool(step, x, step.kind)
            elif step.kind == "tag":
                tags[step.attrs["id"]] = x
            elif step.kind == "skip":
                x = tags[step.attrs["id"]]
            elif step.kind == "add_prev":
                x = _add_prev(x, tags[step.attrs["tag"]])
            elif step.kind == "fc_no_bias":
                assert step.params is not None
                x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
                weights = step.params.reshape(int(x.shape[1]), step.int_attr("num_outputs"))
                x = tf.matmul(x, tf.constant(weights))
            else:
                raise DlibXmlError(f"no TF translation for {step.kind}")
        return tf.identity(x, name="embedding")

    return embed
