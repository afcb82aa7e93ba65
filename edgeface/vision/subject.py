"""Which face of a still image is its subject: the one ``verify``, ``db rebuild`` and ``eval`` take.

A photo handed in to check someone is framed on that person, as LFW's photos are (each is centred on
the labelled face), and a stored chip is centred on its face: the subject is the prominent face
nearest the image centre, not merely the largest (enrollment refuses a photo with several faces).
"Largest" alone takes a bystander who leans into the frame closer to the camera. On LFW View 1 that
happened on 19 of 4,903 photos (a second face larger than the centred one, or a box spanning two
faces), and it was most of the fused embedder's remaining errors: best accuracy 0.9921 -> 0.9949,
all-pairs TAR at FAR 1e-3 0.9848 -> 0.9930 (docs/accuracy.md, "The photo's subject").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

from edgeface.data import BBox

T = TypeVar("T")

# A face counts as prominent when its box is at least this share of the largest box's area, so a
# small face that happens to sit in the middle (a poster, a child behind) never displaces the person
# the photo was taken of. On View 1 any share from 0.3 to 0.7 picks the same faces.
PROMINENT_AREA_SHARE = 0.5


def subject_order(boxes: Sequence[BBox], image_size: tuple[int, int], landmarked: Sequence[bool]) -> list[int]:
    """Indices of ``boxes``: the photo's subject first, then the others landmark-aligned first, larger first.

    ``image_size`` is (height, width) of the image the boxes are in. ``landmarked`` marks the faces
    aligned on landmarks: when any is, the subject is one of them (a keypoint-aligned chip is the
    weaker description). Among those, the subject is the prominent face whose box centre is nearest
    the image centre.
    """
    if len(boxes) != len(landmarked):
        raise ValueError(f"{len(boxes)} boxes but {len(landmarked)} landmark flags")
    if not boxes:
        return []
    areas = [b.width * b.height for b in boxes]
    rest = sorted(range(len(boxes)), key=lambda i: (not landmarked[i], -areas[i]))
    pool = [i for i in rest if landmarked[i] == landmarked[rest[0]]]
    floor = PROMINENT_AREA_SHARE * max(areas[i] for i in pool)
    cy, cx = image_size[0] / 2.0, image_size[1] / 2.0

    def off_centre(i: int) -> float:
        x, y = boxes[i].center
        return math.hypot(x - cx, y - cy)

    first = min((i for i in pool if areas[i] >= floor), key=off_centre)
    return [first, *(i for i in rest if i != first)]


def by_subject(
    faces: Sequence[T],
    image_shape: tuple[int, ...],
    box: Callable[[T], BBox],
    landmarked: Callable[[T], bool] = lambda _: True,
) -> list[T]:
    """``faces`` of an image of ``image_shape`` (height, width, ...) in :func:`subject_order`."""
    order = subject_order([box(f) for f in faces], (image_shape[0], image_shape[1]), [landmarked(f) for f in faces])
    return [faces[i] for i in order]
