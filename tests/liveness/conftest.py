"""Liveness fixtures: real FaceMesh landmarks of real faces, tracked the way the pipeline tracks them.

Spoofs are real photos replayed as a door camera sees a print or a phone held up: still, moved
rigidly frame to frame (shifted, scaled, rolled, as a hand holds it), or also tilted out of the image
plane by up to 20 degrees. The live face is the main speaker of the Hamilton clip. Everything is
computed once per session: the landmarker is the slow part.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edgeface.config import VisionConfig
from edgeface.data import FloatArray, ImageArray
from edgeface.liveness.policy import TrackObservation
from edgeface.pipeline.tracker import SceneCutDetector, Tracker
from edgeface.vision.analyzer import FaceAnalyzer

# A Pi runs the pipeline at about 10 fps; replays are sampled at that rate.
REPLAY_FPS = 10.0
# 4 s of replay: longer than the default 3 s liveness window, so every policy reaches its verdict.
REPLAY_FRAMES = 40
# The camera's frame width (the pipeline's default resize_width).
CAMERA_WIDTH = 640


@dataclass(frozen=True)
class Replay:
    """The sightings of one track, oldest first, and its frames' times and landmarks as arrays."""

    name: str
    observations: list[TrackObservation]

    @property
    def t(self) -> npt.NDArray[np.float64]:
        return np.array([o.t for o in self.observations if o.landmarks is not None], dtype=np.float64)

    @property
    def points(self) -> FloatArray:
        return np.stack([o.landmarks.points for o in self.observations if o.landmarks is not None])


def camera_view(image: ImageArray) -> ImageArray:
    """The image as the pipeline sees it: scaled to the camera's width."""
    scale = CAMERA_WIDTH / image.shape[1]
    size = (CAMERA_WIDTH, round(image.shape[0] * scale))
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))


def hand_held(image: ImageArray, frames: int, seed: int, tilt_deg: float = 0.0) -> list[ImageArray]:
    """A photo held in front of the camera: it drifts +-20 px, zooms +-10 %, rolls +-5 degrees with a
    little tremor and, with ``tilt_deg``, swings out of the image plane about both axes (a pinhole
    camera whose focal length is the image width)."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    focal = float(w)
    k = np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1]])
    out = []
    for i in range(frames):
        scale = 1 + 0.1 * math.sin(i / 7) + rng.normal(0, 0.01)
        roll = 5 * math.sin(i / 11) + rng.normal(0, 0.5)
        shift = (20 * math.sin(i / 5) + rng.normal(0, 2), 15 * math.cos(i / 6) + rng.normal(0, 2))
        m = np.asarray(cv2.getRotationMatrix2D((w / 2, h / 2), roll, scale), dtype=np.float64)
        m[:, 2] += shift
        warp = np.vstack([m, [0, 0, 1]])
        if tilt_deg:
            ax, ay = math.radians(tilt_deg * math.sin(i / 8)), math.radians(tilt_deg * math.cos(i / 9))
            rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
            ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
            r = ry @ rx
            # The plane z = 0 rotated about its centre, one focal length in front of the camera.
            plane = k @ np.column_stack([r[:, 0], r[:, 1], [0, 0, 1]]) @ np.linalg.inv(k)
            warp = plane @ warp
            warp /= warp[2, 2]
        held = cv2.warpPerspective(image, warp, (w, h), borderMode=cv2.BORDER_REPLICATE)
        out.append(np.asarray(held, dtype=np.uint8))
    return out


def track_sightings(
    analyzer: FaceAnalyzer, frames: Sequence[ImageArray], fps: float
) -> dict[int, list[TrackObservation]]:
    """Every track's sightings, as the pipeline's track stage would make them (scene cuts included)."""
    tracker, cuts = Tracker(), SceneCutDetector()
    tracks: dict[int, list[TrackObservation]] = {}
    for index, image in enumerate(frames):
        t = index / fps
        if cuts(image):
            tracker.end_all()
        found, _ = tracker.update(analyzer.locate(image), t)
        for track in found:
            landmarks = track.face.landmarks if track.face is not None else None
            tracks.setdefault(track.track_id, []).append(TrackObservation(t, landmarks))
    return tracks


def longest(tracks: dict[int, list[TrackObservation]], name: str) -> Replay:
    return Replay(name, max(tracks.values(), key=len))


@pytest.fixture(scope="session")
def analyzer() -> Iterator[FaceAnalyzer]:
    with FaceAnalyzer.from_config(VisionConfig()) as shared:
        yield shared


@pytest.fixture(scope="session")
def replay(analyzer: FaceAnalyzer) -> Callable[[str, Sequence[ImageArray]], Replay]:
    """The longest track of frames replayed at ``REPLAY_FPS``, cached by name for the session."""
    cache: dict[str, Replay] = {}

    def make(name: str, frames: Sequence[ImageArray]) -> Replay:
        if name not in cache:
            cache[name] = longest(track_sightings(analyzer, frames, REPLAY_FPS), name)
        return cache[name]

    return make


@pytest.fixture(scope="session")
def photo_spoofs(face_image: Callable[[str], ImageArray], replay: Callable[..., Replay]) -> list[Replay]:
    """A printed photo (the obama.jpg sample) held still, hand-held, and hand-held with tilts."""
    photo = camera_view(face_image("obama.jpg"))
    return [
        replay("obama still", [photo] * REPLAY_FRAMES),
        replay("obama hand-held", hand_held(photo, REPLAY_FRAMES, seed=1)),
        replay("obama tilted", hand_held(photo, REPLAY_FRAMES, seed=2, tilt_deg=20.0)),
    ]


@pytest.fixture(scope="session")
def shared_spoofs(shared_data: Path, replay: Callable[..., Replay]) -> list[Replay]:
    """The spoof set's printed photo (F1) and phone-screen replay (F2), still, hand-held and tilted."""
    out = []
    for path in sorted((shared_data / "spoof" / "fake").glob("*.jpg")):
        image = camera_view(np.asarray(cv2.imread(str(path)), dtype=np.uint8))
        out += [
            replay(f"{path.stem} still", [image] * REPLAY_FRAMES),
            replay(f"{path.stem} hand-held", hand_held(image, REPLAY_FRAMES, seed=3)),
            replay(f"{path.stem} tilted", hand_held(image, REPLAY_FRAMES, seed=4, tilt_deg=20.0)),
        ]
    assert len(out) == 6
    return out


@pytest.fixture(scope="session")
def hamilton(shared_data: Path, analyzer: FaceAnalyzer) -> Replay:
    """The Hamilton clip's main speaker (Lin-Manuel Miranda, 4.3 s facing the camera while talking)."""
    clip = shared_data / "video" / "short_hamilton_clip.mp4"
    if not clip.is_file():
        pytest.skip("hamilton clip absent")
    capture = cv2.VideoCapture(str(clip))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(np.asarray(frame, dtype=np.uint8))
    capture.release()
    return longest(track_sightings(analyzer, frames, fps), "hamilton speaker")
