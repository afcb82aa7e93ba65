"""A track's liveness evidence: bounded by the window, tied to one face, kept once shown."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeface.config import DecisionConfig
from edgeface.data import FloatArray, ImageArray
from edgeface.liveness.policy import LandmarkLiveness, NoLiveness
from edgeface.liveness.track import HISTORY_SLACK_S, MAX_HISTORY, TrackLiveness
from edgeface.pipeline.rules import Thresholds
from edgeface.vision.analyzer import FaceAnalyzer

from .conftest import Replay

# Any similarity between one person's sightings and two people's will do for the bookkeeping tests.
SAME_FACE = 0.9


def test_history_is_bounded_by_the_window(hamilton: Replay) -> None:
    policy = LandmarkLiveness("any", 3.0)
    trail = TrackLiveness(policy)
    landmarks = hamilton.observations[0].landmarks
    fps = 30.0
    for i in range(int(20 * fps)):  # 20 s at 30 fps
        trail.sighting(i / fps, landmarks)
        trail.embedded(i / fps, np.ones(4, dtype=np.float32))
    assert len(trail.history) <= (3.0 + HISTORY_SLACK_S) * fps + 1
    assert trail.history[-1].t - trail.history[0].t <= 3.0 + HISTORY_SLACK_S
    for i in range(2000):  # a camera far faster than any window was sized for: the count cap holds
        trail.sighting(20.0 + i / 1000, landmarks)
    assert len(trail.history) == MAX_HISTORY
    off = TrackLiveness(NoLiveness())
    off.sighting(0.0, landmarks)
    off.embedded(0.0, np.ones(4, dtype=np.float32))
    assert len(off.history) == 0


def embedding(analyzer: FaceAnalyzer, image: ImageArray) -> FloatArray:
    return analyzer.analyze(image)[0].embedding.vector


def test_life_counts_only_for_the_face_that_showed_it(
    hamilton: Replay, analyzer: FaceAnalyzer, face_image: Callable[[str], ImageArray]
) -> None:
    obama = embedding(analyzer, face_image("obama.jpg"))
    obama2 = embedding(analyzer, face_image("obama2.jpg"))
    biden = embedding(analyzer, face_image("biden.jpg"))
    # The decider's floor: the shipped model's "stranger" threshold (0.857; Obama-Biden 0.811).
    same_face = Thresholds.resolve(DecisionConfig(), analyzer.embedder.default_threshold).unknown
    assert float(obama @ obama2) > same_face > float(obama @ biden)
    # A live head on the track (the Hamilton speaker's landmarks); its embeddings are a stranger's
    # (Biden) for the first second, then the track is matched as Obama -- a photo raised in front
    # of a live face without the tracker losing it.
    trail = TrackLiveness(LandmarkLiveness("any", 3.0))
    t0 = hamilton.observations[0].t
    verdicts, stranger_seen = [], 0.0
    for i, obs in enumerate(hamilton.observations):
        t = obs.t - t0
        trail.sighting(t, obs.landmarks)
        if i % 5 == 0:  # an embedding every 5th frame (0.17 s), as the embed interval allows
            stranger = t < 1.0
            stranger_seen = t if stranger else stranger_seen
            trail.embedded(t, biden if stranger else obama2)
            verdicts.append((t, trail.judge("obama", obama, same_face).live))
    # Life was shown from 0.5 s, but not by Obama's face until the stranger's last embedding left
    # the 3 s window.
    assert all(live is None for t, live in verdicts if t <= stranger_seen + 3.0)
    assert all(live is True for t, live in verdicts if t > stranger_seen + 3.0)
    assert any(t > stranger_seen + 3.0 for t, _ in verdicts)
    # Judged as Biden, whose face was there when the evidence came in: the mix rules him out too.
    assert trail.judge("biden", biden, same_face).live is None


def test_life_once_shown_holds_for_the_track(hamilton: Replay, photo_spoofs: list[Replay]) -> None:
    vector = np.ones(4, dtype=np.float32) / 2
    trail = TrackLiveness(LandmarkLiveness("motion", 3.0))
    for obs in hamilton.observations[:40]:
        trail.sighting(obs.t, obs.landmarks)
        trail.embedded(obs.t, vector)
    shown = trail.judge("lin", vector, SAME_FACE)
    assert shown.live is True
    # The person then stands still for 4 s (a still photo's landmarks): the track stays live for
    # them, while another identity matched on it is judged on the still window, and fails.
    still = photo_spoofs[0].observations
    for i, obs in enumerate(still):
        trail.sighting(hamilton.observations[39].t + 0.1 * (i + 1), obs.landmarks)
    assert trail.judge("lin", vector, SAME_FACE) == shown
    assert trail.judge("someone else", vector, SAME_FACE).live is False
