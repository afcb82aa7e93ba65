"""The vision boundary: detect -> landmarks -> align (+quality) -> embed, behind one protocol.

``Vision`` is what every consumer of the models sees: the live pipeline, the still-image requests,
enrollment, eval and bench. ``FaceAnalyzer`` is its implementation over the configured models.
Still images call :meth:`FaceAnalyzer.analyze` (every step on every face). The pipeline calls the
steps separately because it runs them at different rates: :meth:`~Vision.detect` on every frame
(tracking needs boxes only), :meth:`~Vision.landmarks` only on the faces about to be embedded or
watched by a landmark liveness check, :meth:`~Vision.align` on those (gated on quality before an
embedding is paid for), then :meth:`~Vision.embed` on the chips in one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from edgeface.config import VisionConfig
from edgeface.data import Detection, Embedding, Face, ImageArray, Landmarks, Quality
from edgeface.vision.align import Aligner
from edgeface.vision.backends import create_landmarker, detector_for
from edgeface.vision.detect import Detector
from edgeface.vision.embed import Runner, in_order
from edgeface.vision.fused import AnyEmbedder, create_embedder
from edgeface.vision.imageio import ensure_bgr
from edgeface.vision.landmarks import Landmarker
from edgeface.vision.quality import measure
from edgeface.vision.subject import by_subject


@dataclass(frozen=True, slots=True)
class AlignedFace:
    """A face with landmarks, its aligned chip (BGR, the embedder's size) and its quality."""

    face: Face
    chip: ImageArray
    quality: Quality


@dataclass(frozen=True, slots=True)
class AnalyzedFace:
    """A face found in a still image, with its chip and embedding (quality is ``embedding.quality``)."""

    face: Face
    chip: ImageArray
    embedding: Embedding


class Vision(Protocol):
    """The steps of the vision chain, each on its own models; one thread per step at a time."""

    @property
    def model_id(self) -> str:
        """The embedder's model id, stamped on every embedding."""
        ...

    @property
    def keypoint_fallback(self) -> bool:
        """Whether a face without landmarks is aligned on its detector keypoints."""
        ...

    def detect(self, image_bgr: ImageArray) -> list[Detection]:
        """Face boxes with detector keypoints, best score first."""
        ...

    def landmarks(self, image_bgr: ImageArray, detection: Detection) -> Landmarks | None:
        """FaceMesh points of one detected face; None when FaceMesh rejects the crop."""
        ...

    def align(self, image_bgr: ImageArray, faces: Sequence[Face]) -> list[AlignedFace]:
        """Chip and quality of each face that can be aligned, in input order."""
        ...

    def embed(self, aligned: Sequence[AlignedFace], run: Runner = in_order) -> list[Embedding]:
        """One embedding per aligned face, in input order; ``run`` runs the embedder's independent model calls."""
        ...


def _same_models(a: VisionConfig, b: VisionConfig) -> bool:
    """Whether an analyzer built from ``a`` has the landmarker and embedder one from ``b`` needs (shareable)."""
    same = (a.models_dir, a.embedder, a.threads, a.backend) == (b.models_dir, b.embedder, b.threads, b.backend)
    return same and a.backend == "litert"  # Mediapipe's own graphs are not locked


def order_aligned(aligned: Sequence[AlignedFace], image_bgr: ImageArray) -> list[AlignedFace]:
    """Aligned faces of a still image, its subject first (``vision.subject``; landmark-aligned preferred)."""
    return by_subject(
        aligned, image_bgr.shape, lambda a: a.face.detection.bbox, lambda a: a.quality.aligned_by == "landmarks"
    )


class FaceAnalyzer:
    """One detector, landmarker, aligner and embedder.

    Each step may run on its own thread (the pipeline's stages do). Every LiteRT interpreter is
    locked, so two threads calling one step take turns; that is what lets a second analyzer share
    the landmarker and the embedder (``from_config(share=...)``). Mediapipe's graphs are not shared.
    """

    def __init__(
        self,
        detector: Detector,
        landmarker: Landmarker,
        aligner: Aligner,
        embedder: AnyEmbedder,
        *,
        shared: bool = False,
        vision: VisionConfig | None = None,
    ) -> None:
        if aligner.size != embedder.chip_size or aligner.points != embedder.points:
            raise ValueError(
                f"aligner makes {aligner.size}px {aligner.points} chips, embedder {embedder.model_id} wants "
                f"{embedder.chip_size}px {embedder.points}"
            )
        self.detector = detector
        self.landmarker = landmarker
        self.aligner = aligner
        self.embedder = embedder
        self._shared = shared  # the landmarker and embedder belong to another analyzer, which closes them
        self._vision = vision  # the settings it was built from: whether another analyzer may share its models

    @classmethod
    def from_config(
        cls, vision: VisionConfig, *, share: FaceAnalyzer | None = None, detector: Detector | None = None
    ) -> FaceAnalyzer:
        """Build every stage from the vision settings; whatever was built is closed if a later stage fails.

        With ``share`` (an analyzer built from settings with the same models, LiteRT backend and
        threads), this one reuses its landmarker and embedder -- the largest interpreters -- and
        builds only its own detector: the daemon's command thread then costs one detector more than
        the pipeline, not a second copy of every model. A given ``detector`` (made for ``vision``)
        is used instead of building one, and owned like one.
        """
        reuse = share is not None and share._vision is not None and _same_models(share._vision, vision)
        with ExitStack() as stack:
            if share is not None and reuse:
                embedder, landmarker = share.embedder, share.landmarker
            else:
                embedder = create_embedder(vision.models_dir, vision.embedder, vision.threads)
                stack.callback(embedder.close)
                landmarker = create_landmarker(vision.backend, vision.models_dir, vision.threads)
                stack.callback(landmarker.close)
            if detector is None:
                detector = detector_for(vision)
            stack.callback(detector.close)
            aligner = Aligner(
                embedder.template,
                embedder.chip_size,
                embedder.points,
                keypoint_fallback=vision.keypoint_fallback,
                fallback_min_score=vision.keypoint_fallback_min_score,
            )
            analyzer = cls(detector, landmarker, aligner, embedder, shared=reuse, vision=vision)
            stack.pop_all()  # success: the analyzer owns them now
        return analyzer

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def keypoint_fallback(self) -> bool:
        return self.aligner.keypoint_fallback

    def detect(self, image_bgr: ImageArray) -> list[Detection]:
        """Face boxes with detector keypoints, best score first."""
        return self.detector.detect(image_bgr)  # every detector checks its image itself

    def landmarks(self, image_bgr: ImageArray, detection: Detection) -> Landmarks | None:
        """FaceMesh points of one detected face; None when FaceMesh rejects the crop."""
        return self.landmarker.landmarks(image_bgr, detection)  # every landmarker checks its image itself

    def locate(self, image_bgr: ImageArray) -> list[Face]:
        """Detections with their landmarks (``None`` where FaceMesh rejected the crop), best score first."""
        image = ensure_bgr(image_bgr)
        return [Face(d, self.landmarker.landmarks(image, d)) for d in self.detector.detect(image)]

    def align(self, image_bgr: ImageArray, faces: Sequence[Face]) -> list[AlignedFace]:
        """Chip and quality of each face, in input order.

        A face without landmarks is aligned on its detector keypoints (quality ``aligned_by="keypoints"``),
        or skipped when ``vision.keypoint_fallback`` is off.
        """
        image = ensure_bgr(image_bgr)
        out = []
        for face in faces:
            aligned = self.aligner.align_face(image, face)
            if aligned is None:
                continue
            chip = aligned[0]
            out.append(AlignedFace(face, chip, measure(face.detection, face.landmarks, chip)))
        return out

    def embed(self, aligned: Sequence[AlignedFace], run: Runner = in_order) -> list[Embedding]:
        """One embedding per aligned face, in input order; ``run`` runs the embedder's independent model calls."""
        vectors = self.embedder.embed([a.chip for a in aligned], run)
        model_id = self.embedder.model_id
        return [Embedding(v, model_id, a.quality) for v, a in zip(vectors, aligned, strict=True)]

    def analyze(self, image_bgr: ImageArray) -> list[AnalyzedFace]:
        """Every aligned face of a still image with chip and embedding: the photo's subject first (``subject``),
        then landmark-aligned before keypoint-aligned faces, larger first."""
        aligned = order_aligned(self.align(image_bgr, self.locate(image_bgr)), image_bgr)
        return [AnalyzedFace(a.face, a.chip, e) for a, e in zip(aligned, self.embed(aligned), strict=True)]

    def close(self) -> None:
        """Release the native resources (Mediapipe graphs) of the parts this analyzer owns."""
        self.detector.close()
        if not self._shared:
            self.landmarker.close()
            self.embedder.close()

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
