"""The door decision defaults of every embedder entry, as measured by ``edgeface eval --calibrate``.

Each value was printed by one run on LFW View 1 (docs/accuracy.md shows the commands and output):

    edgeface eval ../shared/data/lfw/view1_train.csv ../shared/data/lfw/view1_test.csv \
        --models <id> --calibrate --target-far 1e-3 --cache DIR --json OUT

The build writes them into the manifest entries (``default_threshold``, ``threshold_source``,
``uncertain_band``, ``margin``) so that a rebuild reproduces ``models/manifest.json`` byte for byte.
Evaluation data never enters the build; only these measured numbers do. View 2 is never used here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_PROTOCOL = (
    "edgeface eval --calibrate on LFW View 1 (view1_train.csv + view1_test.csv: 4,903 photos of 3,069 persons, "
    "full runtime path: BlazeFace short range, FaceMesh or keypoint fallback, this embedder): every "
    "different-person pair of the photos (12,014,232) is an impostor; the threshold is the middle of the gap at "
    "the lowest score with FAR <= 1e-3, rounded up to 3 decimals: "
)


@dataclass(frozen=True)
class DoorCalibration:
    """One ``--calibrate`` result: match threshold, the band down to the unknown threshold, the margin."""

    threshold: float
    far: str  # all-pairs FAR at the threshold, as printed
    tar: str  # all-pairs TAR at the threshold, as printed
    unknown: float  # threshold at all-pairs FAR 1e-2
    band_share: str  # % of same-person pairs inside the band, as printed
    margin: float
    # Flip augmentation (manifest ``flip``), chosen on View 1 before the calibration, which measures the
    # vectors it gives. None for a fused entry: its components carry their own (sface_build.FUSED_FLIP).
    flip: bool | None = None

    @property
    def band(self) -> float:
        return round(self.threshold - self.unknown, 3)

    def fields(self) -> dict[str, Any]:
        """The manifest fields, in the manifest's order."""
        source = (
            f"{_PROTOCOL}FAR {self.far}, TAR {self.tar} on those pairs. uncertain_band: down to FAR 1e-2 (unknown "
            f"threshold {self.unknown:.3f}; {self.band_share} % of same-person pairs fall in the band). margin: 1st "
            "percentile of the right person's lead over the next, 20 seeded galleries of 100 persons. "
            "See docs/accuracy.md."
        )
        return {
            "default_threshold": self.threshold,
            "threshold_source": source,
            "uncertain_band": self.band,
            "margin": self.margin,
            **({} if self.flip is None else {"flip": self.flip}),
        }


DOOR: dict[str, DoorCalibration] = {
    "dlib_resnet_v1_int8": DoorCalibration(0.927, "9.24e-04", "0.9530", 0.910, "3.67", 0.010, flip=True),
    "dlib_resnet_v1_float32": DoorCalibration(0.927, "8.82e-04", "0.9285", 0.908, "5.66", 0.009, flip=False),
    "sface_2021dec_int8": DoorCalibration(0.368, "9.63e-04", "0.9907", 0.301, "0.40", 0.118, flip=True),
    "sface_2021dec_float32": DoorCalibration(0.363, "9.91e-04", "0.9911", 0.297, "0.26", 0.106, flip=False),
    "fused_dlib_sface_int8": DoorCalibration(0.751, "9.88e-04", "0.9930", 0.721, "0.26", 0.036),
}


def door_fields(model_id: str) -> dict[str, Any]:
    """``default_threshold``, ``threshold_source``, ``uncertain_band``, ``margin`` and ``flip`` of an entry."""
    return DOOR[model_id].fields()
