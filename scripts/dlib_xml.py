"""Parse the XML that dlib's ``net_to_xml`` writes into a flat, input-first list of layers.

dlib lists layers from the loss (idx 0) down to the input; we reverse that so a builder can walk the
network in execution order. Only the layer kinds of dlib's face-recognition ResNet are understood;
anything else is an error rather than a silent mistranslation.

Parameter layouts (dlib/dnn/layers.h):
- ``con``: filters ``(num_filters, k, nr, nc)`` then ``num_filters`` biases when ``use_bias``;
- ``affine_con``: ``gamma[k]`` then ``beta[k]`` (``y = gamma * x + beta`` per channel);
- ``fc_no_bias``: weights ``(num_inputs, num_outputs)``, ``y = x @ W``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]  # element types vary (uint8 chips, float32 tensors); shapes are in the docstrings


class DlibXmlError(ValueError):
    """The XML is not a network this parser understands."""


@dataclass(frozen=True)
class Layer:
    """One dlib layer: ``kind`` is the XML tag (or ``tag``/``skip``), ``attrs`` its attributes, ``params`` numbers."""

    kind: str
    attrs: dict[str, str] = field(default_factory=dict)
    params: Array | None = None

    def int_attr(self, name: str) -> int:
        """An integer attribute, with the layer named in the error when it is missing."""
        try:
            return int(self.attrs[name])
        except (KeyError, ValueError) as exc:
            raise DlibXmlError(f"{self.kind} layer has no integer attribute {name!r}: {self.attrs}") from exc


@dataclass(frozen=True)
class DlibNet:
    """The input's per-channel mean and size, and the layers in execution order (input first)."""

    mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: tuple[Layer, ...]


_PARAM_KINDS = {"con", "affine_con", "fc_no_bias"}
_PLAIN_KINDS = {"relu", "max_pool", "avg_pool", "add_prev"}


def _numbers(text: str | None) -> Array:
    values = np.array((text or "").split(), dtype=np.float32)
    if values.size == 0:
        raise DlibXmlError("a parameterised layer has no numbers")
    return values


def parse_net_xml(path: Path) -> DlibNet:
    """Read ``path`` (written by dlib's ``net_to_xml``) into a :class:`DlibNet`."""
    layers: list[Layer] = []
    mean: tuple[float, float, float] | None = None
    size: tuple[int, int] | None = None
    # iterparse keeps memory flat: the 22 MB of weights arrive as ~90 MB of text.
    for _event, elem in ET.iterparse(path, events=("end",)):
        if elem.tag != "layer":
            continue
        kind = elem.get("type")
        if kind in ("tag", "skip"):
            layers.append(Layer(kind, {"id": elem.get("id", "")}))
        elif kind == "comp":
            (op,) = list(elem)
            if op.tag in _PARAM_KINDS:
                layers.append(Layer(op.tag, dict(op.attrib), _numbers(op.text)))
            elif op.tag in _PLAIN_KINDS:
                layers.append(Layer(op.tag, dict(op.attrib)))
            else:
                raise DlibXmlError(f"unsupported dlib layer <{op.tag}> at idx {elem.get('idx')}")
        elif kind == "input":
            (op,) = list(elem)
            if op.tag != "input_rgb_image_sized":
                raise DlibXmlError(f"unsupported input layer <{op.tag}>")
            mean = (float(op.get("r", "nan")), float(op.get("g", "nan")), float(op.get("b", "nan")))
            size = (int(op.get("nr", "0")), int(op.get("nc", "0")))
        elif kind != "loss":
            raise DlibXmlError(f"unsupported layer type {kind!r} at idx {elem.get('idx')}")
        elem.clear()
    if mean is None or size is None:
        raise DlibXmlError(f"{path}: no input_rgb_image_sized layer")
    layers.reverse()
    return DlibNet(mean_rgb=mean, input_size=size, layers=tuple(layers))
