"""The passive policy: the model's scores over a track's window, alone and ANDed with blink/motion."""

from __future__ import annotations

import pytest

from edgeface.config import LivenessConfig
from edgeface.liveness.policy import LandmarkLiveness, PassivePolicy, TrackObservation, build_policy, uses_passive

from .conftest import Replay

THRESHOLD = 0.6


def scored(replay: Replay, score: float, every: int = 2) -> list[TrackObservation]:
    """The replay's real sightings, with a passive score on every ``every``-th one (as embeddings are claimed)."""
    return [
        TrackObservation(o.t, o.landmarks, score if i % every == 0 else None) for i, o in enumerate(replay.observations)
    ]


def test_a_verdict_needs_the_configured_number_of_scores_then_comes_at_once(photo_spoofs: list[Replay]) -> None:
    policy = PassivePolicy(THRESHOLD, 3.0, samples=3)
    history = scored(photo_spoofs[0], 0.2)
    assert policy.assess(history[:3]).live is None  # two scored sightings
    early = policy.assess(history[:5])  # three, well inside the 3 s window
    assert early.live is False and early.checks == {"passive": pytest.approx(0.2)}
    assert policy.assess(scored(photo_spoofs[0], 0.9)[:5]).live is True


def test_the_mean_over_the_window_decides() -> None:
    policy = PassivePolicy(THRESHOLD, 1.0, samples=2)
    history = [TrackObservation(0.0, None, 0.1), TrackObservation(0.5, None, 0.9), TrackObservation(2.0, None, 0.8)]
    assert policy.assess(history[:2]).live is False  # mean 0.5
    result = policy.assess(history)  # the 0.1 has left the 1 s window; one score left
    assert result.live is None and result.checks["passive"] == pytest.approx(0.8)
    history.append(TrackObservation(2.2, None, 0.7))
    assert policy.assess(history).live is True


def test_combined_with_motion_both_must_pass(photo_spoofs: list[Replay], hamilton: Replay) -> None:
    policy = PassivePolicy(THRESHOLD, 3.0, 3, LandmarkLiveness("motion", 3.0))
    # A photo the model takes for skin still fails: it does not move like a head once the window is watched.
    photo = policy.assess(scored(photo_spoofs[0], 0.95))
    assert photo.live is False and set(photo.checks) == {"passive", "motion"}
    # A live head that the model doubts is refused at once, whatever it does.
    assert policy.assess(scored(hamilton, 0.3)[:6]).live is False
    live = policy.assess(scored(hamilton, 0.95))
    assert live.live is True, live


def test_settings_build_passive_policies() -> None:
    assert uses_passive("passive") and uses_passive("passive+any") and not uses_passive("any")
    alone = build_policy(LivenessConfig(mode="passive", passive_samples=2), 0.55)
    assert isinstance(alone, PassivePolicy) and alone.landmarks is None
    assert (alone.threshold, alone.samples, alone.required) == (0.55, 2, True)
    both = build_policy(LivenessConfig(mode="passive+all", passive_threshold=0.7), 0.55)
    assert isinstance(both, PassivePolicy) and both.threshold == 0.7  # the configured one wins
    assert both.landmarks is not None and both.landmarks.mode == "all"
    with pytest.raises(ValueError, match="threshold"):
        build_policy(LivenessConfig(mode="passive"))
