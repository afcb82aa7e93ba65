"""The models one daemon run uses, kept across config reloads while ``[vision]`` and ``[liveness]`` stay the same.

Loading the TFLite interpreters again at every reload left ~46 MB of native heap behind each time
(measured over 20 reloads in ``tests/service/test_faults.py``), and they hold no per-run state, so a
reload reuses them unless the settings they were built from changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeface.config import LivenessConfig, VisionConfig
from edgeface.liveness.passive import PassiveLiveness, open_passive
from edgeface.liveness.policy import uses_passive
from edgeface.matching.enroll import enrollment_vision
from edgeface.vision.analyzer import FaceAnalyzer


@dataclass(frozen=True, slots=True)
class Models:
    """The loaded models of one ``[vision]`` and ``[liveness]``: the pipeline's and the command thread's."""

    vision: VisionConfig
    liveness: LivenessConfig
    analyzer: FaceAnalyzer
    enroll_analyzer: FaceAnalyzer  # also the still-image verbs': same command thread
    passive: PassiveLiveness | None  # the pipeline's, when the liveness mode uses it
    still_passive: PassiveLiveness  # the ``liveness`` verb's

    @classmethod
    def load(cls, vision: VisionConfig, liveness: LivenessConfig) -> Models:
        """Load every model; a failure closes what was already loaded."""
        analyzer = FaceAnalyzer.from_config(vision)
        try:
            # Its own analyzer: the pipeline's is not thread-safe, and enrollment uses the full-range
            # detector so a second, smaller face in a photo is seen and refused.
            enroll_analyzer = FaceAnalyzer.from_config(enrollment_vision(vision))
        except BaseException:
            analyzer.close()
            raise
        try:
            passive = open_passive(liveness, vision) if uses_passive(liveness.mode) else None
            still_passive = open_passive(liveness, vision)
        except BaseException:
            enroll_analyzer.close()
            analyzer.close()
            raise
        return cls(vision, liveness, analyzer, enroll_analyzer, passive, still_passive)

    def close(self) -> None:
        """Release the interpreters."""
        self.enroll_analyzer.close()
        self.analyzer.close()


class ModelCache:
    """Holds the current ``Models``; hands them out again while the settings they came from are unchanged."""

    def __init__(self) -> None:
        self._models: Models | None = None

    def get(self, vision: VisionConfig, liveness: LivenessConfig) -> Models:
        """The models for these settings: the cached ones, or freshly loaded (closing the stale ones)."""
        if self._models is not None and (self._models.vision, self._models.liveness) != (vision, liveness):
            self.close()
        if self._models is None:
            self._models = Models.load(vision, liveness)
        return self._models

    def close(self) -> None:
        """Close the cached models, if any."""
        if self._models is not None:
            self._models.close()
            self._models = None
