"""Questions about one photo: who is in it (identify), is it this person (verify), where are the faces
(detect), and how do they look (analyze).

The same vision chain and the same decision rules as the camera pipeline, applied to one image:
``FaceAnalyzer``'s locate/align/embed steps, the quality gate, ``Thresholds`` (match, uncertain band,
margin) and ``classify`` with the negative samples (``edgeface.pipeline.rules``). What a photo cannot
have is a track: no vote fusion over frames, and none of the track-based liveness checks (blink,
motion); a passive single-image liveness check is reported per face when one is configured.

Runs on the command worker with its own analyzer (LiteRT interpreters are not thread-safe, and the
camera pipeline's are never shared), so requests cost the pipeline CPU time but never its models.
Every answer carries ``processing_time_ms`` per stage. Nothing is written unless asked: ``remember``
puts an unknown face into the unknowns spool, where it can be confirmed like a camera sighting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgeface.config import DecisionConfig, Settings
from edgeface.data import BBox, Candidate, ImageArray, Match
from edgeface.errors import CommandError, ImageError
from edgeface.liveness.fill import BorderFill, detect_fill
from edgeface.liveness.policy import uses_passive
from edgeface.matching.db import FaceDatabase
from edgeface.matching.matcher import match
from edgeface.matching.unknowns import UnknownSpool
from edgeface.pipeline.rules import Thresholds, classify, gate
from edgeface.service.pacing import Pacer
from edgeface.service.still_json import Clock, candidate_json, keypoints, quality_json
from edgeface.vision.analyzer import AlignedFace, FaceAnalyzer, order_aligned
from edgeface.vision.emotion import EmotionClassifier
from edgeface.vision.imageio import ImageTooLargeError, decode_image
from edgeface.vision.subject import by_subject

# Largest number of candidates a request may ask for; more says nothing a door controller can use.
MAX_TOP_K = 50


class PassiveResultLike(Protocol):
    """What a single-image liveness check says about one face."""

    @property
    def live(self) -> bool | None: ...

    @property
    def score(self) -> float | None: ...

    @property
    def reason(self) -> str | None: ...


class PassiveCheck(Protocol):
    """A single-image (passive) liveness model: ``check(image_bgr, bbox, fill=...)``."""

    def check(self, image_bgr: ImageArray, bbox: BBox, *, fill: BorderFill | None) -> PassiveResultLike: ...


def open_emotion(settings: Settings) -> EmotionClassifier | None:
    """The configured emotion model on an interpreter of its own; None unless ``attributes.enabled``."""
    if not settings.attributes.enabled:
        return None
    return EmotionClassifier(settings.vision.models_dir, settings.attributes.model, settings.vision.threads)


def event_attributes(classifier: EmotionClassifier | None) -> Callable[[ImageArray, BBox], dict[str, float]] | None:
    """The emotion of a recognised face for its event (``classifier`` is the decide thread's own); None without one."""
    if classifier is None:
        return None

    def emotion(image: ImageArray, bbox: BBox) -> dict[str, float]:
        return classifier.classify(image, [bbox])[0].probabilities

    return emotion


@dataclass(frozen=True, slots=True)
class Described:
    """One aligned face of the request with its embedding."""

    aligned: AlignedFace
    vector: np.ndarray[Any, np.dtype[np.float32]]


class StillImages:
    """The still-image verbs over one analyzer (owned by the caller's thread) and the database."""

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        db: FaceDatabase,
        decision: DecisionConfig,
        thresholds: Thresholds,
        *,
        spool: UnknownSpool | None = None,
        emotion: EmotionClassifier | None = None,
        liveness: PassiveCheck | None = None,
        liveness_decides: bool = False,
        pacer: Pacer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if analyzer.model_id != db.model_id:
            raise ValueError(f"analyzer embeds with {analyzer.model_id}, database holds {db.model_id}")
        self.analyzer = analyzer
        self.db = db
        self.decision = decision
        self.thresholds = thresholds
        self.spool = spool
        self.emotion = emotion
        self.liveness = liveness
        self.liveness_decides = liveness_decides
        self._pacer = pacer or Pacer(1.0)
        self._clock = clock

    @classmethod
    def from_config(
        cls,
        settings: Settings,
        analyzer: FaceAnalyzer,
        db: FaceDatabase,
        spool: UnknownSpool | None,
        *,
        liveness: PassiveCheck | None = None,
        emotion: EmotionClassifier | None = None,
    ) -> StillImages:
        """The daemon's and the CLI's instance, with the configured thresholds.

        ``liveness`` is reported per face; it decides (``liveness_failed``) only when ``liveness.mode``
        makes the camera pipeline decide with it too. ``emotion`` (``open_emotion``) is used by
        ``analyze`` when given."""
        thresholds = Thresholds.resolve(settings.decision, analyzer.embedder.default_threshold)
        pacer = Pacer(settings.still.max_share)
        return cls(
            analyzer,
            db,
            settings.decision,
            thresholds,
            spool=spool,
            emotion=emotion,
            liveness=liveness,
            liveness_decides=uses_passive(settings.liveness.mode),
            pacer=pacer,
        )

    # --- verbs ------------------------------------------------------------------------------------

    def identify(
        self,
        image: bytes | ImageArray,
        *,
        top_k: int | None = None,
        threshold: float | None = None,
        remember: bool = False,
    ) -> dict[str, Any]:
        """Every face, the photo's subject first, with its status under the pipeline's rules and its top matches."""
        return self._paced(lambda: self._identify(image, top_k=top_k, threshold=threshold, remember=remember))

    def verify(
        self,
        image: bytes | ImageArray,
        *,
        person_id: str | None = None,
        other: bytes | ImageArray | None = None,
        threshold: float | None = None,
    ) -> dict[str, Any]:
        """Whether the subject of ``image`` (``vision.subject``) is ``person_id`` (or the subject of ``other``)."""
        return self._paced(lambda: self._verify(image, person_id=person_id, other=other, threshold=threshold))

    def detect(self, image: bytes | ImageArray) -> dict[str, Any]:
        """Every detected face, the subject first: box, detector score, five landmarks and quality; no embedding."""
        return self._paced(lambda: self._detect(image))

    def analyze(self, image: bytes | ImageArray) -> dict[str, Any]:
        """Per face: emotion (when attributes are enabled), liveness (when a model is present) and quality."""
        return self._paced(lambda: self._analyze(image))

    def _paced(self, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self._pacer.turn() as waited:
            result = work()
        # Time held back by the pacer, outside processing_time_ms.
        result["paced_ms"] = round(waited * 1000.0, 1)
        return result

    def _identify(
        self,
        image: bytes | ImageArray,
        *,
        top_k: int | None = None,
        threshold: float | None = None,
        remember: bool = False,
    ) -> dict[str, Any]:
        k = top_k if top_k is not None else self.decision.top_k
        if not 1 <= k <= MAX_TOP_K:
            raise CommandError("bad_request", f"top_k: {k} is out of range 1..{MAX_TOP_K}")
        th = self._thresholds(threshold)
        clock = Clock()
        bgr = self._decode(image, "image", clock)
        described = self._describe(bgr, clock, "image")
        snapshot = self.db.snapshot()
        with clock.stage("match"):
            matches = match(snapshot, np.stack([d.vector for d in described]), k) if described else []
        faces = []
        fill = self._fill(bgr, clock)
        for d, found in zip(described, matches, strict=True):
            face = self._face_json(bgr, d.aligned, clock, fill)
            reason_gate = gate(d.aligned.quality, self.decision)
            status, reason = classify(found, th)
            if reason_gate is not None:
                # The pipeline does not decide a face that fails a gate: report it, never name it.
                status, reason = "uncertain", reason_gate
            elif status == "known" and self.liveness_decides and face["liveness"] and face["liveness"]["live"] is False:
                reason = "liveness_failed"
            best = found.best
            named = status != "unknown" and reason_gate is None
            face.update(
                status=status,
                reason=reason,
                best_match=candidate_json(best, th.match) if best is not None and named else None,
                top_matches=[candidate_json(c, th.match) for c in found.candidates],
                margin=round(found.margin, 4),
            )
            if remember and status == "unknown" and self.spool is not None:
                sighting = self.spool.observe(d.vector, self._clock())
                face["unknown_id"] = sighting.unknown_id
            faces.append(face)
        return {
            "face_detected": True,
            "faces": len(faces),
            "results": faces,
            "threshold": round(th.match, 4),
            "unknown_threshold": round(th.unknown, 4),
            "model": self.analyzer.model_id,
            "database_generation": snapshot.generation,
            "processing_time_ms": clock.report(),
        }

    def _verify(
        self,
        image: bytes | ImageArray,
        *,
        person_id: str | None = None,
        other: bytes | ImageArray | None = None,
        threshold: float | None = None,
    ) -> dict[str, Any]:
        th = self._thresholds(threshold)
        clock = Clock()
        if (person_id is None) == (other is None):
            raise CommandError("bad_request", "give person_id or a second image")
        person = self.db.get(person_id) if person_id is not None else None  # not_found before any work
        face = self._describe(self._decode(image, "image", clock), clock, "image")[0]
        if person is not None:
            with clock.stage("match"):
                similarity, negative = self._person_similarity(face.vector, person.id)
            candidate = Candidate(person.id, person.name, similarity)
        else:
            assert other is not None
            second = self._describe(self._decode(other, "image_b", clock), clock, "image_b")[0]
            with clock.stage("match"):
                similarity = float(np.clip(np.dot(face.vector, second.vector), -1.0, 1.0))
            candidate, negative = Candidate("image_b", "image_b", similarity), -1.0
        status, reason = classify(Match((candidate,), negative_similarity=negative), th)
        return {
            "same": status == "known",
            "reason": reason,
            "similarity": round(similarity, 4),
            "distance": round(1.0 - similarity, 4),
            "threshold": round(th.match, 4),
            "person": {"person_id": person.id, "name": person.name} if person is not None else None,
            "quality": quality_json(face.aligned.quality),
            "bbox": face.aligned.face.detection.bbox.as_list(),
            "processing_time_ms": clock.report(),
        }

    def _detect(self, image: bytes | ImageArray) -> dict[str, Any]:
        clock = Clock()
        bgr = self._decode(image, "image", clock)
        with clock.stage("detect"):
            found = by_subject(self.analyzer.locate(bgr), bgr.shape, lambda f: f.detection.bbox)
        self._require_faces(found, "image", clock)
        with clock.stage("align"):
            aligned = {id(a.face): a for a in self.analyzer.align(bgr, found)}
        faces = []
        for face in found:
            a = aligned.get(id(face))
            faces.append(
                {
                    "bbox": face.detection.bbox.as_list(),
                    "score": round(face.detection.score, 4),
                    "landmarks": keypoints(face),
                    "quality": quality_json(a.quality) if a is not None else None,
                }
            )
        return {"face_detected": True, "faces": len(faces), "results": faces, "processing_time_ms": clock.report()}

    def _analyze(self, image: bytes | ImageArray) -> dict[str, Any]:
        clock = Clock()
        bgr = self._decode(image, "image", clock)
        with clock.stage("detect"):
            found = self.analyzer.locate(bgr)
        with clock.stage("align"):
            aligned = order_aligned(self.analyzer.align(bgr, found), bgr)
        self._require_faces(aligned, "image", clock)
        fill = self._fill(bgr, clock)
        faces = [self._face_json(bgr, a, clock, fill, emotion=True) for a in aligned]
        return {
            "face_detected": True,
            "faces": len(faces),
            "results": faces,
            "attributes": self.emotion.model_id if self.emotion is not None else None,
            "processing_time_ms": clock.report(),
        }

    # --- steps ------------------------------------------------------------------------------------

    def _thresholds(self, threshold: float | None) -> Thresholds:
        if threshold is None:
            return self.thresholds
        # A request's own match threshold keeps the configured width of the uncertain band.
        band = self.thresholds.match - self.thresholds.unknown
        return Thresholds(match=threshold, unknown=threshold - band, margin=self.thresholds.margin)

    def _decode(self, image: bytes | ImageArray, where: str, clock: Clock) -> ImageArray:
        if not isinstance(image, bytes | bytearray):
            return image
        with clock.stage("decode"):
            try:
                return decode_image(bytes(image))
            except ImageTooLargeError as exc:
                raise CommandError("too_large", f"{where}: {exc}") from exc
            except ImageError as exc:
                raise CommandError("bad_request", f"{where}: {exc}") from exc

    @staticmethod
    def _require_faces(faces: list[Any], where: str, clock: Clock) -> None:
        if not faces:
            extra = {"face_detected": False, "faces": 0, "processing_time_ms": clock.report()}
            raise CommandError("no_face", f"{where}: no face found", extra)

    def _describe(self, bgr: ImageArray, clock: Clock, where: str) -> list[Described]:
        """Aligned and embedded faces, the subject first; ``no_face`` when there is none."""
        with clock.stage("detect"):
            found = self.analyzer.locate(bgr)
        with clock.stage("align"):
            aligned = order_aligned(self.analyzer.align(bgr, found), bgr)
        self._require_faces(aligned, where, clock)
        with clock.stage("embed"):
            embeddings = self.analyzer.embed(aligned)
        return [Described(a, e.vector) for a, e in zip(aligned, embeddings, strict=True)]

    def _person_similarity(self, vector: np.ndarray[Any, np.dtype[np.float32]], person_id: str) -> tuple[float, float]:
        """(best positive, best negative or -1) similarity of ``vector`` to one person's samples."""
        snap = self.db.snapshot()
        index = int(np.flatnonzero(snap.person_ids == person_id)[0])
        rows = snap.row_person == index
        scores = snap.matrix[rows] @ vector
        positive = snap.positive[rows]
        best = float(np.clip(scores[positive].max(), -1.0, 1.0))
        negative = float(np.clip(scores[~positive].max(), -1.0, 1.0)) if (~positive).any() else -1.0
        return best, negative

    def _fill(self, bgr: ImageArray, clock: Clock) -> BorderFill | None:
        """The image's border fill, once per image, for the passive check's crops (none without the check)."""
        if self.liveness is None:
            return None
        with clock.stage("liveness"):
            return detect_fill(bgr)

    def _face_json(
        self, bgr: ImageArray, a: AlignedFace, clock: Clock, fill: BorderFill | None, *, emotion: bool = False
    ) -> dict[str, Any]:
        detection = a.face.detection
        out: dict[str, Any] = {
            "bbox": detection.bbox.as_list(),
            "score": round(detection.score, 4),
            "quality": quality_json(a.quality),
        }
        if self.liveness is not None:
            with clock.stage("liveness"):
                result = self.liveness.check(bgr, detection.bbox, fill=fill)
            score = round(result.score, 4) if result.score is not None else None
            out["liveness"] = {"live": result.live, "score": score, "reason": result.reason}
        else:
            out["liveness"] = None
        if emotion:
            if self.emotion is None:
                out["emotion"] = None
            else:
                with clock.stage("emotion"):
                    (found,) = self.emotion.classify(bgr, [detection.bbox])
                out["emotion"] = found.to_json()
        return out
