"""Face detection: Mediapipe's BlazeFace models run directly under LiteRT.

Mediapipe's graph is reproduced step by step (face_detection.pbtxt and its calculators): letterbox
the whole frame into the square model input, decode the SSD regressors against a fixed anchor grid,
sigmoid the scores, drop those under the threshold, merge overlaps with *weighted* NMS, then undo
the letterbox. Nothing else of Mediapipe is needed at run time, so the daemon ships on any platform
that has a TFLite runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np

from edgeface.data import BBox, Detection, FloatArray, ImageArray
from edgeface.errors import ModelError
from edgeface.vision.crop import warp_rect
from edgeface.vision.imageio import ensure_bgr
from edgeface.vision.manifest import ModelSpec, load_manifest
from edgeface.vision.runtime import TFLiteModel

Range = Literal["short", "full"]

# Manifest ids of the two BlazeFace variants.
MODEL_IDS: dict[Range, str] = {"short": "blazeface_short", "full": "blazeface_full"}

# Mediapipe's NonMaxSuppressionCalculator options for faces: IoU above this merges two boxes.
NMS_IOU = 0.3
# TensorsToDetectionsCalculator clips raw logits to +-100 before the sigmoid (avoids exp overflow).
SCORE_CLIP = 100.0
# SsdAnchorsCalculator: fixed-size anchors centred half a cell in; min/max scale do not matter
# for fixed-size anchors (their width and height are 1), so they are not modelled.
ANCHOR_OFFSET = 0.5
# The boxes are followed by six (x, y) keypoints in each 16-float regressor row.
NUM_KEYPOINTS = 6


@dataclass(frozen=True, slots=True)
class SsdOptions:
    """Anchor grid and box scaling of one BlazeFace model (Mediapipe's calculator options)."""

    input_size: int
    strides: tuple[int, ...]
    # > 0 adds a second anchor per layer (Mediapipe's interpolated scale); 0 adds none.
    interpolated_scale_aspect_ratio: float
    num_anchors: int
    # TensorsToDetectionsCalculator's min_score_thresh: anchors below it never enter the weighted
    # NMS average. Mediapipe 0.10.18 keeps this graph value whatever min_detection_confidence says
    # (measured: the legacy API returns the same detections at 0.3 and 0.75).
    decode_min_score: float

    @property
    def scale(self) -> float:
        """x/y/w/h scale of the regressors: the input size in pixels."""
        return float(self.input_size)


# From mediapipe/modules/face_detection/face_detection_{short,full}_range.pbtxt (0.10.x).
SSD_OPTIONS: dict[str, SsdOptions] = {
    "blazeface_short": SsdOptions(128, (8, 16, 16, 16), 1.0, 896, 0.5),
    "blazeface_full": SsdOptions(192, (4,), 0.0, 2304, 0.6),
}


class Detector(Protocol):
    """Finds faces in a BGR frame."""

    def detect(self, image_bgr: ImageArray) -> list[Detection]:
        """Faces sorted by score (best first), at most ``max_faces``, in frame pixels."""
        ...

    def close(self) -> None:
        """Release native resources (a no-op for LiteRT)."""
        ...


def ssd_anchors(options: SsdOptions) -> FloatArray:
    """(N, 2) anchor centres in [0, 1], in the model's output order (SsdAnchorsCalculator)."""
    centres: list[FloatArray] = []
    strides = list(options.strides)
    layer = 0
    while layer < len(strides):
        # Consecutive layers with the same stride share one feature map; their anchors interleave
        # per cell, which is why Mediapipe groups them (and why the count per cell can be 6).
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
        per_layer = 1 + (1 if options.interpolated_scale_aspect_ratio > 0 else 0)
        per_cell = per_layer * (last - layer)
        size = int(np.ceil(options.input_size / strides[layer]))
        ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        grid = np.stack([(xs + ANCHOR_OFFSET) / size, (ys + ANCHOR_OFFSET) / size], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2).astype(np.float32))
        layer = last
    anchors = np.concatenate(centres, axis=0)
    if anchors.shape[0] != options.num_anchors:  # a wrong options table, not a user error
        raise ModelError(f"anchor grid has {anchors.shape[0]} anchors, expected {options.num_anchors}")
    return anchors


def weighted_nms(boxes: FloatArray, keypoints: FloatArray, scores: FloatArray, iou: float) -> FloatArray:
    """Mediapipe's WEIGHTED non-max suppression; rows ``[score, x0, y0, x1, y1, kx0, ky0, ...]``, best first.

    A cluster is every remaining box overlapping the best remaining one by more than ``iou``; its
    box and keypoints are the score-weighted mean over the cluster, its score the best one's. This
    averages away the jitter of neighbouring anchors, which plain NMS would keep.
    """
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    flat = np.concatenate([boxes, keypoints.reshape(len(boxes), 2 * keypoints.shape[1])], axis=1)
    out: list[FloatArray] = []
    while order.size:
        best = order[0]
        ix = np.maximum(0.0, np.minimum(boxes[best, 2], boxes[order, 2]) - np.maximum(boxes[best, 0], boxes[order, 0]))
        iy = np.maximum(0.0, np.minimum(boxes[best, 3], boxes[order, 3]) - np.maximum(boxes[best, 1], boxes[order, 1]))
        inter = ix * iy
        union = areas[best] + areas[order] - inter
        overlap = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        member = overlap > iou
        member[0] = True  # a degenerate (zero-area) best box still forms its own cluster
        cluster = order[member]
        w = scores[cluster]
        merged = (flat[cluster] * w[:, None]).sum(axis=0) / w.sum()
        out.append(np.concatenate([[scores[best]], merged]).astype(np.float32))
        order = order[~member]
    return np.stack(out) if out else np.zeros((0, 1 + flat.shape[1]), np.float32)


class LiteRTDetector:
    """BlazeFace short or full range on LiteRT, decoded exactly as Mediapipe's graph does."""

    def __init__(self, models_dir: Path, model_id: str, min_score: float, max_faces: int, threads: int = 1) -> None:
        spec: ModelSpec = load_manifest(models_dir).get(model_id)
        if spec.role != "detector":
            raise ModelError(f"model {model_id!r} in {models_dir} is a {spec.role}, not a detector")
        options = SSD_OPTIONS.get(model_id)
        if options is None:
            raise ModelError(
                f"detector {model_id!r}: no anchor options known for it (supported: {', '.join(SSD_OPTIONS)})"
            )
        if (spec.input.width, spec.input.height) != (options.input_size, options.input_size):
            raise ModelError(
                f"detector {model_id!r}: manifest input {spec.input.width}x{spec.input.height}, "
                f"anchors are for {options.input_size}x{options.input_size}"
            )
        self._model = TFLiteModel(models_dir, spec, threads)
        shapes = [tuple(int(v) for v in d["shape"]) for d in self._model.output_details]
        regressors = (1, options.num_anchors, 4 + 2 * NUM_KEYPOINTS)
        if sorted(shapes) != sorted([regressors, (1, options.num_anchors, 1)]):
            raise ModelError(
                f"detector file {models_dir / spec.file} ({model_id}): "
                f"outputs {shapes}, expected {regressors} and (1, {options.num_anchors}, 1)"
            )
        self._box_output = shapes.index(regressors)
        self._options = options
        self._anchors = ssd_anchors(options)
        self._mean = np.asarray(spec.input.mean, dtype=np.float32)
        self._scale = np.float32(spec.input.scale)
        self._bgr = spec.input.color == "bgr"
        # Anchors are decoded at Mediapipe's own threshold, so the weighted NMS averages the same
        # anchors as Mediapipe does and boxes match it exactly; ``min_score`` then filters the merged
        # faces. A min_score below the graph's value lowers the decode threshold too, or it could
        # never take effect. Compared on the logit, so the sigmoid runs only on survivors.
        decode = min(options.decode_min_score, min_score)
        self._min_logit = float(np.log(decode / (1.0 - decode)))
        self.model_id = model_id
        self.min_score = min_score
        self.max_faces = max_faces

    def detect(self, image_bgr: ImageArray) -> list[Detection]:
        """Faces sorted by score (best first), at most ``max_faces``, in frame pixels.

        Boxes are clipped to the frame; keypoints are not (an eye just outside the frame is still
        where it is, and clipping it would tilt the FaceMesh crop).
        """
        image = ensure_bgr(image_bgr)
        height, width = image.shape[:2]
        size = self._options.input_size
        # Letterbox: Mediapipe's ImageToTensorCalculator (keep_aspect_ratio) widens the whole-frame
        # ROI to a max(w, h) square around the frame centre and pads with zeros (BORDER_ZERO).
        side = float(max(width, height))
        tensor, matrix = warp_rect(image, (width / 2.0, height / 2.0), side, 0.0, size, border=cv2.BORDER_CONSTANT)
        if not self._bgr:
            tensor = tensor[..., ::-1]
        x = ((tensor.astype(np.float32) - self._mean) * self._scale)[None]
        outputs = self._model.run(x)
        raw = outputs[self._box_output][0]
        logits = np.clip(outputs[1 - self._box_output][0, :, 0], -SCORE_CLIP, SCORE_CLIP)
        keep = np.flatnonzero(logits >= self._min_logit)
        if keep.size == 0:
            return []
        scores = (1.0 / (1.0 + np.exp(-logits[keep]))).astype(np.float32)
        rows = raw[keep] / np.float32(self._options.scale)
        anchors = self._anchors[keep]
        centre = rows[:, 0:2] + anchors
        half = rows[:, 2:4] / 2.0
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        keypoints = rows[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + anchors[:, None, :]
        clusters = weighted_nms(boxes, keypoints, scores, NMS_IOU)
        clusters = clusters[clusters[:, 0] >= self.min_score][: self.max_faces]
        # Tensor [0, 1] coordinates -> frame pixels through the inverse letterbox.
        inverse = np.linalg.inv(matrix)
        out: list[Detection] = []
        for row in clusters:
            pts = row[1:].reshape(-1, 2).astype(np.float64) * size
            pix = (pts @ inverse[:2, :2].T + inverse[:2, 2]).astype(np.float32)
            x0, y0 = np.clip(pix[0], 0, (width, height))
            x1, y1 = np.clip(pix[1], 0, (width, height))
            if x1 - x0 < 1.0 or y1 - y0 < 1.0:  # a box that lies (almost) wholly outside the frame
                continue
            out.append(Detection(BBox(float(x0), float(y0), float(x1), float(y1)), float(row[0]), pix[2:].copy()))
        return out

    def close(self) -> None:
        """Nothing to release: the interpreter is freed with the object."""
