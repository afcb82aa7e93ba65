"""Aligned 150x150 face chips made by dlib itself, for calibrating and checking the rebuilt embedder.

Photos come from registry packages only (never from ../shared/data, which is evaluation data):
the ``face_recognition==1.3.0`` sdist's ``tests/test_images`` (via :func:`edgeface.samples.ensure_samples`)
and scikit-image's ``astronaut``. Seven photos give nine faces, so the calibration set is built from
augmented copies: dlib's own ``jitter_image`` (small rotation/scale/shift, mirror) plus contrast,
brightness, colour gain, gamma, low resolution and sensor noise, drawn from a seeded generator so a
rebuild sees the same chips.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dlib
import numpy as np
import numpy.typing as npt

from edgeface.samples import ensure_samples

Array = npt.NDArray[Any]  # element types vary (uint8 chips, float32 tensors); shapes are in the docstrings

CHIP_SIZE = 150
CHIP_PADDING = 0.25
# dlib/image_transforms/interpolation.h, get_face_chip_details(): where the 5-point landmarks are sent,
# in a unit square before padding. Order: image-right eye outer, image-right eye inner, image-left eye
# outer, image-left eye inner, nose base (dlib's 5-point predictor order).
_DLIB_UNIT_TEMPLATE = np.array(
    [
        (0.8595674595992, 0.2134981538014),
        (0.6460604764104, 0.2289674387677),
        (0.1205750620789, 0.2137274526848),
        (0.3340850613712, 0.2290642403242),
        (0.4901123135679, 0.6277975316475),
    ]
)
# Photometric augmentation ranges: wide enough to cover indoor cameras and auto-exposure swings.
_CONTRAST = (0.6, 1.4)
_BRIGHTNESS = (-40.0, 40.0)
_CHANNEL_GAIN = (0.85, 1.15)
_GAMMA = (0.7, 1.4)
_LOW_RES_PROBABILITY = 0.3  # small, far faces upsampled to the chip size
_LOW_RES_SIZE = (40, 90)
_NOISE_SIGMA = (0.0, 6.0)


def chip_template(size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> Array:
    """dlib's 5-point target in chip pixel coordinates, ``(5, 2)``.

    dlib fits a least-squares similarity from the landmarks to ``(unit + padding) / (1 + 2 padding) * size``
    and then maps that square's corners onto pixels ``0 .. size - 1``, hence the ``size - 1`` scale.
    """
    return (_DLIB_UNIT_TEMPLATE + padding) / (1 + 2 * padding) * (size - 1)


def model_file(name: str) -> Path:
    """A model file shipped by ``face-recognition-models`` (located without importing its pkg_resources use)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("face-recognition-models is not installed (pip install -e .[models])")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from face-recognition-models")
    return path


def registry_photos() -> dict[str, Array]:
    """Real photos as RGB uint8 arrays, keyed by a stable name, from registry packages only."""
    import skimage.data  # models extra only; imported here so the rest of the module works without it

    photos = {f"face_recognition/{p.name}": dlib.load_rgb_image(str(p)) for p in sorted(ensure_samples().iterdir())}
    photos["skimage/astronaut"] = np.ascontiguousarray(skimage.data.astronaut()[..., :3])
    return photos


@dataclass(frozen=True)
class Face:
    """One detected face: where it came from, the photo, and dlib's 5-point landmarks."""

    source: str
    image: Array
    shape: Any  # dlib.full_object_detection


class DlibReference:
    """dlib's detector, 5-point predictor and ResNet: the oracle the rebuilt models are checked against."""

    def __init__(self) -> None:
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))
        self.recogniser = dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))

    def faces(self, photos: dict[str, Array], upsample: int = 1) -> list[Face]:
        """Every face dlib finds in ``photos``, in a stable order."""
        found = []
        for name, image in photos.items():
            for rect in sorted(self.detector(image, upsample), key=lambda r: (r.left(), r.top())):
                found.append(Face(name, image, self.predictor(image, rect)))
        return found

    def chip(self, face: Face) -> Array:
        """dlib's aligned chip, as ``face_recognition`` makes it (150 px, padding 0.25)."""
        return np.asarray(dlib.get_face_chip(face.image, face.shape, size=CHIP_SIZE, padding=CHIP_PADDING))

    def descriptors(self, chips: Array) -> Array:
        """dlib's raw 128-d descriptors of aligned chips ``[N, 150, 150, 3]``."""
        return np.array([self.recogniser.compute_face_descriptor(np.ascontiguousarray(c)) for c in chips])

    def landmarks_on_chips(self, chips: Array) -> Array:
        """Run the detector and 5-point predictor on each chip; ``(M, 5, 2)`` for the chips with a face."""
        points = []
        for chip in chips:
            rects = self.detector(chip, 1)
            if rects:
                shape = self.predictor(chip, rects[0])
                points.append([(p.x, p.y) for p in shape.parts()])
        return np.array(points, dtype=np.float64).reshape(-1, 5, 2)


def augment(chips: Array, per_chip: int, seed: int) -> Array:
    """``per_chip`` jittered and re-lit copies of each chip, ``[N * per_chip, size, size, 3]`` uint8."""
    rng = np.random.default_rng(seed)
    out = []
    for chip in chips:
        # dlib's jitter draws from its own fixed-seed generator: same call order, same chips.
        for jittered in dlib.jitter_image(np.ascontiguousarray(chip), num_jitters=per_chip):
            out.append(_photometric(np.asarray(jittered), rng))
    return np.stack(out)


def _photometric(chip: Array, rng: np.random.Generator) -> Array:
    x = chip.astype(np.float32)
    if rng.random() < _LOW_RES_PROBABILITY:
        side = int(rng.integers(*_LOW_RES_SIZE))
        small = dlib.resize_image(np.ascontiguousarray(chip), side, side)
        x = np.asarray(dlib.resize_image(small, chip.shape[0], chip.shape[1])).astype(np.float32)
    mean = x.mean()
    x = (x - mean) * rng.uniform(*_CONTRAST) + mean + rng.uniform(*_BRIGHTNESS)
    x *= rng.uniform(*_CHANNEL_GAIN, size=3).astype(np.float32)
    x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** rng.uniform(*_GAMMA)
    x += rng.normal(0.0, rng.uniform(*_NOISE_SIGMA), size=x.shape)
    return np.asarray(np.clip(np.rint(x), 0, 255), dtype=np.uint8)
