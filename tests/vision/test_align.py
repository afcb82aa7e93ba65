"""Face chips: the similarity fit, the pyramid for large faces, borders, and dlib's own chips."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface.errors import ImageError
from edgeface.vision.align import Aligner, similarity
from edgeface.vision.manifest import load_manifest

from .support import INT8, PORTRAITS, DlibFace, ImageLoader

# Mean absolute difference to dlib.get_face_chip from the same five points, grey levels. Measured
# 1.3-2.5 on the sample photos; the residual is dlib's pyramid filter and border handling.
DLIB_CHIP_MAE = 3.5


@pytest.fixture(scope="module")
def aligner(models_dir: Path) -> Aligner:
    spec = load_manifest(models_dir).get(INT8)
    assert spec.alignment is not None
    return Aligner(spec.template, spec.alignment.size)


def _place(aligner: Aligner, scale: float, angle_deg: float, centre: tuple[float, float]) -> np.ndarray:
    """The template mapped into an image by a known similarity (chip -> image)."""
    a = np.radians(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    mid = np.array([aligner.size / 2.0, aligner.size / 2.0])
    return (aligner.template - mid) @ rot.T + np.asarray(centre)


def test_similarity_recovers_a_known_transform() -> None:
    src = np.array([[0, 0], [10, 0], [0, 10], [7, 3], [2, 9]], dtype=np.float64)
    a = np.radians(20.0)
    dst = 2.5 * src @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) + [100.0, 40.0]
    fit = similarity(src, dst)
    np.testing.assert_allclose(src @ fit[:, :2].T + fit[:, 2], dst, atol=1e-9)


def test_transform_sends_the_points_onto_the_template(aligner: Aligner) -> None:
    points = _place(aligner, 2.3, 17.0, (400.0, 300.0))
    matrix = aligner.transform(points)
    assert matrix.shape == (2, 3)
    np.testing.assert_allclose(points @ matrix[:, :2].T + matrix[:, 2], aligner.template, atol=1e-6)


def test_chip_without_pyramid_is_a_plain_bilinear_warp(aligner: Aligner, face_image: ImageLoader) -> None:
    image = face_image("obama.jpg")
    points = _place(aligner, 1.5, -10.0, (500.0, 300.0))
    chip = aligner.align(image, points)
    assert chip.shape == (aligner.size, aligner.size, 3) and chip.dtype == np.uint8
    expected = cv2.warpAffine(image, aligner.transform(points), (aligner.size, aligner.size), flags=cv2.INTER_LINEAR)
    assert np.abs(chip.astype(int) - expected.astype(int)).max() <= 1


def test_large_face_is_filtered_before_sampling(aligner: Aligner, face_image: ImageLoader) -> None:
    image = face_image("obama3.jpg")  # 1434 x 2333
    points = _place(aligner, 6.0, 5.0, (700.0, 900.0))
    chip = aligner.align(image, points).astype(np.float64)
    # Reference: area-average the image down by 4 first (no aliasing), then warp the rest of the way.
    small = cv2.resize(image, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    ref = cv2.warpAffine(small, aligner.transform(points * 0.25), (aligner.size, aligner.size), flags=cv2.INTER_LINEAR)
    naive = cv2.warpAffine(image, aligner.transform(points), (aligner.size, aligner.size), flags=cv2.INTER_LINEAR)
    ours_err = np.abs(chip - ref).mean()
    assert ours_err < 3.0
    assert ours_err < np.abs(naive.astype(np.float64) - ref).mean()  # closer than sampling without a pyramid


def test_face_beyond_the_border_gives_black_where_there_is_no_image(aligner: Aligner, face_image: ImageLoader) -> None:
    image = face_image("obama.jpg")
    height, width = image.shape[:2]
    half_out = aligner.align(image, _place(aligner, 1.0, 0.0, (0.0, height / 2)))
    assert (half_out[:, :60] == 0).all() and half_out[:, 90:].mean() > 10
    far_out = aligner.align(image, _place(aligner, 3.0, 0.0, (-5.0 * width, -5.0 * height)))
    assert far_out.shape == (aligner.size, aligner.size, 3) and not far_out.any()


def test_bad_points_and_template_are_refused(aligner: Aligner, face_image: ImageLoader) -> None:
    with pytest.raises(ImageError, match="five finite"):
        aligner.align(face_image("obama.jpg"), np.zeros((4, 2), np.float32))
    with pytest.raises(ImageError, match="five finite"):
        aligner.transform(np.full((5, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="five finite"):
        Aligner(np.zeros((68, 2)), 150)


@pytest.mark.reference
@pytest.mark.parametrize("name", PORTRAITS)
def test_chip_matches_dlibs_own_chip(
    aligner: Aligner, face_image: ImageLoader, dlib_faces: dict[str, DlibFace], name: str
) -> None:
    reference = dlib_faces[name]
    ours = aligner.align(face_image(name), reference.points)
    assert np.abs(ours.astype(np.float64) - reference.chip).mean() <= DLIB_CHIP_MAE
