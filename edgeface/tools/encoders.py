"""The face encoders eval and bench compare: edgeface's embedders and the dlib reference.

Each turns a BGR image into (box, descriptor) pairs and says how two descriptors are scored
(higher = more alike) and which score its own pipeline accepts as "same person".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from edgeface import vision as vision_package
from edgeface.config import VisionConfig
from edgeface.data import AlignedBy, BBox, FloatArray, ImageArray, Quality
from edgeface.errors import ModelError
from edgeface.tools import embcache, metrics, reference
from edgeface.vision import subject as subject_module
from edgeface.vision.manifest import FusedSpec, Manifest, ModelSpec, load_manifest
from edgeface.vision.quality import face_size
from edgeface.vision.subject import by_subject

Metric = Literal["cosine", "neg_euclidean"]
REFERENCE = reference.REFERENCE_ID
REFERENCE_ALIASES = frozenset({REFERENCE, "dlib", "face_recognition"})


@dataclass(frozen=True, slots=True)
class EncodedFace:
    """A detected face; ``vector`` is None when it could not be described (no landmarks to align on)."""

    bbox: BBox
    vector: FloatArray | None
    aligned_by: AlignedBy | None = None  # edgeface's faces only
    quality: Quality | None = None  # edgeface's faces only


class FaceEncoder(Protocol):
    """Finds every face in an image and describes each with a vector."""

    @property
    def model_id(self) -> str: ...

    @property
    def metric(self) -> Metric: ...

    @property
    def default_threshold(self) -> float:
        """Score at or above which the pipeline calls two faces the same person."""
        ...

    @property
    def fingerprint(self) -> str:
        """Changes whenever the vectors it produces could: models, settings, code (see ``embcache``)."""
        ...

    def encode(self, image: ImageArray) -> list[EncodedFace]:
        """Every face of ``image``, the photo's subject first (``edgeface.vision.subject``)."""
        ...


def score_matrix(metric: Metric, a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> metrics.F64:
    """Pairwise scores of rows of ``a`` against rows of ``b`` under ``metric``."""
    if metric == "cosine":
        return metrics.cosine_matrix(a, b)
    return metrics.neg_euclidean_matrix(a, b)


def _pipeline_models(manifest: Manifest, model_id: str) -> list[object]:
    """What identifies the models of one pipeline: file hashes, and a fused entry's whole description."""
    spec = manifest.embedder(model_id)
    ids = {c.id for c in spec.components} if isinstance(spec, FusedSpec) else {model_id}
    files: list[object] = [
        m.sha256 for m in manifest.models if isinstance(m, ModelSpec) and (m.role != "embedder" or m.id in ids)
    ]
    if not isinstance(spec, FusedSpec):
        return [*files, {"flip": spec.flip}]  # the mirror changes the vector, not the file
    # The decision defaults and the prose do not change a vector (components' flips do): recalibrating keeps the cache.
    decision = {"default_threshold", "threshold_source", "uncertain_band", "margin"}
    return [*files, spec.model_dump(exclude={*decision, "notes", "build"})]


class EdgefaceEncoder:
    """edgeface's own detector -> landmarks -> alignment -> embedder chain with one embedder."""

    metric: Metric = "cosine"

    def __init__(self, vision: VisionConfig, model_id: str) -> None:
        from edgeface.vision.analyzer import FaceAnalyzer

        spec = load_manifest(vision.models_dir).embedder(model_id)
        if spec.role != "embedder" or spec.default_threshold is None:
            raise ModelError(f"model {model_id!r} in {vision.models_dir} is a {spec.role}, not an embedder")
        self.model_id = model_id
        self.default_threshold = float(spec.default_threshold)
        self.analyzer = FaceAnalyzer.from_config(vision.model_copy(update={"embedder": model_id}))
        manifest = load_manifest(vision.models_dir)
        self.fingerprint = embcache.fingerprint(
            {
                "models": _pipeline_models(manifest, model_id),
                "vision": vision.model_dump(exclude={"models_dir", "threads", "embedder"}),
                "code": embcache.source_digest(Path(__file__), *Path(vision_package.__file__).parent.glob("*.py")),
            }
        )

    def encode(self, image: ImageArray) -> list[EncodedFace]:
        # The analyzer's steps rather than analyze(): a face FaceMesh rejects still counts as found.
        faces = self.analyzer.locate(image)
        aligned = self.analyzer.align(image, faces)
        done = {id(a.face): (a, e) for a, e in zip(aligned, self.analyzer.embed(aligned), strict=True)}
        out = []
        for f in faces:
            if id(f) in done:
                a, e = done[id(f)]
                out.append(EncodedFace(f.detection.bbox, e.vector, a.quality.aligned_by, a.quality))
            else:
                out.append(EncodedFace(f.detection.bbox, None))
        return order_encoded(out, image)


class SmallFaceEncoder:
    """An edgeface encoder fed each image shrunk so that its largest face is ``face_px`` pixels.

    What a camera shows of a person further away: the image is downscaled as the capture thread does
    (INTER_AREA) until the largest detection's shorter side -- the size ``decision.min_face_px`` gates
    on -- is ``face_px``, then the whole pipeline runs on the small image. An image whose largest face
    is already that small, or that has no face, is encoded as it is (never enlarged).
    """

    metric: Metric = "cosine"

    def __init__(self, inner: EdgefaceEncoder, face_px: int) -> None:
        self.inner = inner
        self.face_px = face_px
        self.model_id = inner.model_id
        self.default_threshold = inner.default_threshold
        self.fingerprint = embcache.fingerprint({"pipeline": inner.fingerprint, "face_px": face_px})

    def shrink(self, image: ImageArray) -> ImageArray:
        """``image`` downscaled so that its largest face is ``face_px`` pixels (unchanged when it is not larger)."""
        detections = self.inner.analyzer.detect(image)
        if not detections:
            return image
        biggest = max(detections, key=lambda d: d.bbox.width * d.bbox.height)
        scale = self.face_px / face_size(biggest)
        if scale >= 1.0:
            return image
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)

    def encode(self, image: ImageArray) -> list[EncodedFace]:
        return self.inner.encode(self.shrink(image))


class ReferenceEncoder:
    """face_recognition's pipeline on dlib, scored as face_recognition does (minus the distance)."""

    model_id = REFERENCE
    metric: Metric = "neg_euclidean"
    default_threshold = -reference.TOLERANCE

    def __init__(self) -> None:
        self.pipeline = reference.ReferencePipeline()
        self.fingerprint = embcache.fingerprint(
            {
                "dlib": reference.dlib_version(),
                # the subject rule picks which face's vector is cached
                "code": embcache.source_digest(Path(reference.__file__), Path(__file__), Path(subject_module.__file__)),
            }
        )

    def encode(self, image: ImageArray) -> list[EncodedFace]:
        return order_encoded([EncodedFace(f.bbox, f.descriptor) for f in self.pipeline.analyze(image)], image)


def embedder_ids(models_dir: Path) -> list[str]:
    """Ids of every embedder in the manifest, in manifest order."""
    return [spec.id for spec in load_manifest(models_dir).models if spec.role == "embedder"]


def default_models(models_dir: Path) -> list[str]:
    """Every manifest embedder, plus the dlib reference when it is installed."""
    return embedder_ids(models_dir) + ([REFERENCE] if reference.available() else [])


def resolve_model_ids(models_dir: Path, names: Sequence[str]) -> list[str]:
    """Manifest embedder ids, with ``dlib`` and ``face_recognition`` accepted for the reference."""
    known = embedder_ids(models_dir)
    out = []
    for name in names:
        model_id = REFERENCE if name in REFERENCE_ALIASES else name
        if model_id != REFERENCE and model_id not in known:
            raise ModelError(f"unknown model {name!r} (known: {', '.join([*known, REFERENCE])})")
        out.append(model_id)
    return out


def create_encoders(vision: VisionConfig, model_ids: Sequence[str], *, face_px: int | None = None) -> list[FaceEncoder]:
    """One encoder per id (see ``resolve_model_ids``); ``dlib_reference`` is the face_recognition pipeline.

    With ``face_px`` every image is first shrunk to that face size (``SmallFaceEncoder``); the reference
    has no part in that, its HOG detector finds no face below ~80 px.
    """
    ids = resolve_model_ids(vision.models_dir, model_ids)
    if face_px is not None and REFERENCE in ids:
        raise ModelError(
            f"a face size of {face_px} px is measured on edgeface's embedders only; "
            f"drop dlib from --models (face_recognition's HOG detector finds no face that small)"
        )
    encoders: list[FaceEncoder] = []
    for model_id in ids:
        if model_id == REFERENCE:
            encoders.append(ReferenceEncoder())
        elif face_px is None:
            encoders.append(EdgefaceEncoder(vision, model_id))
        else:
            encoders.append(SmallFaceEncoder(EdgefaceEncoder(vision, model_id), face_px))
    return encoders


def order_encoded(faces: Sequence[EncodedFace], image: ImageArray) -> list[EncodedFace]:
    """``faces`` of ``image`` in the order still-image requests rank them: the photo's subject first.

    Only described faces can be the subject; landmark-aligned ones (and the reference's, which has
    no fallback) before keypoint-aligned ones.
    """
    described = [f for f in faces if f.vector is not None]
    first = by_subject(described, image.shape, lambda f: f.bbox, lambda f: f.aligned_by != "keypoints")
    return first + [f for f in faces if f.vector is None]


def subject(faces: Sequence[EncodedFace]) -> EncodedFace | None:
    """The subject of a photo, as ``verify`` picks it: the first described face of ``encode``'s answer."""
    return next((f for f in faces if f.vector is not None), None)
