"""The models one daemon run uses, kept across config reloads while the model settings stay the same.

Loading the TFLite interpreters again at every reload left ~46 MB of native heap behind each time
(measured over 20 reloads in ``tests/service/test_faults.py``), and they hold no per-run state, so a
reload reuses them unless the settings they were built from (``[vision]``, ``[liveness]``,
``[attributes]``) changed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from edgeface.config import AttributesConfig, LivenessConfig, Settings, VisionConfig
from edgeface.data import Detection, ImageArray
from edgeface.liveness.passive import PassiveLiveness, open_passive
from edgeface.liveness.policy import uses_passive
from edgeface.matching.enroll import enrollment_vision
from edgeface.service.still import open_emotion
from edgeface.vision.analyzer import FaceAnalyzer
from edgeface.vision.backends import detector_for
from edgeface.vision.detect import MODEL_IDS, Detector
from edgeface.vision.emotion import EmotionClassifier
from edgeface.vision.manifest import load_manifest, model_path


class OnDemandDetector:
    """The command thread's detector, loaded at its first request.

    Its full-range model holds 9 MB of packed weights that a door which is never sent an enrollment
    or a still image would carry for nothing. The file is still checked against the manifest at
    start, so a missing or damaged model stops the daemon there, naming the file.
    """

    def __init__(self, vision: VisionConfig) -> None:
        model_path(vision.models_dir, load_manifest(vision.models_dir).get(MODEL_IDS[vision.detector]))
        self._vision = vision
        self._lock = threading.Lock()
        self._detector: Detector | None = None

    @property
    def loaded(self) -> bool:
        return self._detector is not None

    def detect(self, image_bgr: ImageArray) -> list[Detection]:
        """Faces sorted by score (best first), loading the model first if this is the first request."""
        with self._lock:
            if self._detector is None:
                self._detector = detector_for(self._vision)
            detector = self._detector
        return detector.detect(image_bgr)

    def close(self) -> None:
        """Release the model, if it was loaded."""
        with self._lock:
            if self._detector is not None:
                self._detector.close()
                self._detector = None


def _enroll_analyzer(vision: VisionConfig, pipeline: FaceAnalyzer) -> FaceAnalyzer:
    """The command thread's analyzer: its own full-range detector (loaded on demand), the rest the pipeline's."""
    enroll = enrollment_vision(vision)
    # Mediapipe's graphs are built at start like the rest of that backend (and nothing is shared).
    detector = OnDemandDetector(enroll) if vision.backend == "litert" else None
    return FaceAnalyzer.from_config(enroll, share=pipeline, detector=detector)


@dataclass(frozen=True, slots=True)
class Models:
    """The loaded models of one set of model settings: the pipeline's and the command thread's.

    The two threads share one copy of every model they both use (the landmarker, the embedder, the
    passive liveness and emotion models: their interpreters are locked, and each is called a few
    times per track or per command); only the detectors differ.
    """

    vision: VisionConfig
    liveness: LivenessConfig
    attributes: AttributesConfig
    analyzer: FaceAnalyzer
    enroll_analyzer: FaceAnalyzer  # also the still-image verbs': same command thread
    passive: PassiveLiveness | None  # the pipeline's, when the liveness mode uses it
    still_passive: PassiveLiveness  # the ``liveness`` verb's
    # Emotion, when ``attributes.enabled``: one interpreter for the decide thread and ``analyze``.
    event_emotion: EmotionClassifier | None
    still_emotion: EmotionClassifier | None

    @classmethod
    def load(cls, settings: Settings) -> Models:
        """Load every model; a failure closes what was already loaded."""
        vision, liveness = settings.vision, settings.liveness
        analyzer = FaceAnalyzer.from_config(vision)
        try:
            # Its own detector: enrollment uses the full-range model so a second, smaller face in a
            # photo is seen and refused; the rest is the pipeline's.
            enroll_analyzer = _enroll_analyzer(vision, analyzer)
        except BaseException:
            analyzer.close()
            raise
        try:
            passive = open_passive(liveness, vision) if uses_passive(liveness.mode) else None
            still_passive = passive if passive is not None else open_passive(liveness, vision)
            emotion = open_emotion(settings)
        except BaseException:
            enroll_analyzer.close()
            analyzer.close()
            raise
        return cls(
            vision,
            liveness,
            settings.attributes,
            analyzer,
            enroll_analyzer,
            passive,
            still_passive,
            emotion,
            emotion,
        )

    def close(self) -> None:
        """Release the interpreters."""
        self.enroll_analyzer.close()
        self.analyzer.close()


class ModelCache:
    """Holds the current ``Models``; hands them out again while the settings they came from are unchanged."""

    def __init__(self) -> None:
        self._models: Models | None = None

    def get(self, settings: Settings) -> Models:
        """The models for these settings: the cached ones, or freshly loaded (closing the stale ones)."""
        wanted = (settings.vision, settings.liveness, settings.attributes)
        if self._models is not None and (self._models.vision, self._models.liveness, self._models.attributes) != wanted:
            self.close()
        if self._models is None:
            self._models = Models.load(settings)
        return self._models

    def close(self) -> None:
        """Close the cached models, if any."""
        if self._models is not None:
            self._models.close()
            self._models = None
