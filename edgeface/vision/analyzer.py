"""The whole vision chain behind one object: detect -> landmarks -> align -> quality -> embed.

Still images (enrollment, eval, bench) call :meth:`FaceAnalyzer.analyze`. The live pipeline calls
the steps separately, because it runs them at different rates: :meth:`~FaceAnalyzer.locate` on every
frame (tracking and blink liveness need boxes and landmarks each time), :meth:`~FaceAnalyzer.align`
only for the faces it wants to describe (and can gate on their quality before paying for an
embedding), then :meth:`~FaceAnalyzer.embed` on those chips in one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from types import TracebackType

from edgeface.config import VisionConfig
from edgeface.data import Embedding, Face, ImageArray, Quality
from edgeface.vision.align import Aligner
from edgeface.vision.detect import Detector, create_detector
from edgeface.vision.fused import AnyEmbedder, create_embedder
from edgeface.vision.imageio import ensure_bgr
from edgeface.vision.landmarks import Landmarker, create_landmarker
from edgeface.vision.quality import measure


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


def _rank(aligned: AlignedFace) -> tuple[bool, float]:
    """Sort key, best subject first: landmark-aligned faces before keypoint-aligned ones, then larger."""
    box = aligned.face.detection.bbox
    return aligned.quality.aligned_by != "landmarks", -box.width * box.height


class FaceAnalyzer:
    """Owns one detector, landmarker, aligner and embedder; not thread-safe (one per stage thread)."""

    def __init__(self, detector: Detector, landmarker: Landmarker, aligner: Aligner, embedder: AnyEmbedder) -> None:
        if aligner.size != embedder.chip_size or aligner.points != embedder.points:
            raise ValueError(
                f"aligner makes {aligner.size}px {aligner.points} chips, embedder {embedder.model_id} wants "
                f"{embedder.chip_size}px {embedder.points}"
            )
        self.detector = detector
        self.landmarker = landmarker
        self.aligner = aligner
        self.embedder = embedder

    @classmethod
    def from_config(cls, vision: VisionConfig) -> FaceAnalyzer:
        """Build every stage from the vision settings; whatever was built is closed if a later stage fails."""
        with ExitStack() as stack:
            embedder = create_embedder(vision.models_dir, vision.embedder, vision.threads)
            detector = create_detector(
                vision.backend,
                vision.detector,
                vision.models_dir,
                vision.min_detection_score,
                vision.max_faces,
                vision.threads,
            )
            stack.callback(detector.close)
            landmarker = create_landmarker(vision.backend, vision.models_dir, vision.threads)
            stack.callback(landmarker.close)
            aligner = Aligner(
                embedder.template,
                embedder.chip_size,
                embedder.points,
                keypoint_fallback=vision.keypoint_fallback,
                fallback_min_score=vision.keypoint_fallback_min_score,
            )
            analyzer = cls(detector, landmarker, aligner, embedder)
            stack.pop_all()  # success: the analyzer owns them now
        return analyzer

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

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

    def embed(self, aligned: Sequence[AlignedFace]) -> list[Embedding]:
        """One embedding per aligned face, computed in one batch, in input order."""
        vectors = self.embedder.embed([a.chip for a in aligned])
        model_id = self.embedder.model_id
        return [Embedding(v, model_id, a.quality) for v, a in zip(vectors, aligned, strict=True)]

    def analyze(self, image_bgr: ImageArray) -> list[AnalyzedFace]:
        """Every aligned face of a still image with chip and embedding: landmark-aligned first, then by size."""
        aligned = sorted(self.align(image_bgr, self.locate(image_bgr)), key=_rank)
        return [AnalyzedFace(a.face, a.chip, e) for a, e in zip(aligned, self.embed(aligned), strict=True)]

    def close(self) -> None:
        """Release the detector's and landmarker's native resources (Mediapipe graphs)."""
        self.landmarker.close()
        self.detector.close()
        self.embedder.close()

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
