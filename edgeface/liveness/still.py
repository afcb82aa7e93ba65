"""Passive liveness of every face in a still image: what the MQTT ``liveness`` verb answers.

Decoding follows ``edgeface.vision.imageio`` (pixel limit before decoding, EXIF orientation), and its
errors become typed command errors: ``too_large`` for an image over the pixel limit, ``bad_request``
for one that cannot be decoded. An image without a face is not an error: ``faces`` is empty.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeface.data import Face, ImageArray
from edgeface.errors import CommandError, ImageError
from edgeface.liveness.fill import detect_fill
from edgeface.liveness.passive import PassiveLiveness
from edgeface.vision.imageio import ImageTooLargeError, decode_image
from edgeface.vision.subject import by_subject

Locate = Callable[[ImageArray], list[Face]]


class StillLiveness:
    """Faces of an image (via ``locate``) judged by the passive check; used from one thread at a time."""

    def __init__(self, locate: Locate, passive: PassiveLiveness) -> None:
        self._locate = locate
        self.passive = passive

    def judge(self, image: bytes, where: str) -> dict[str, Any]:
        """``{"faces": [{"bbox", "live", "score", "reason"}, ...]}`` for one encoded image, its subject first."""
        try:
            bgr = decode_image(image)
        except ImageTooLargeError as exc:
            raise CommandError("too_large", f"{where}: {exc}") from exc
        except ImageError as exc:
            raise CommandError("bad_request", f"{where}: {exc}") from exc
        faces = by_subject(self._locate(bgr), bgr.shape, lambda f: f.detection.bbox)
        out = []
        fill = detect_fill(bgr) if faces else None  # a still's padding is not the scene: crops avoid it
        for face in faces:
            box = face.detection.bbox
            result = self.passive.check(bgr, box, fill=fill)
            out.append(
                {
                    "bbox": box.as_list(),
                    "live": result.live,
                    "score": None if result.score is None else round(result.score, 4),
                    "reason": result.reason,
                }
            )
        return {"faces": out}
