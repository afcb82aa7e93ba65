"""Border fill of a still image: black padding that software added around the picture.

Rotation fill (LFW's deep-funnel alignment leaves the corners its rotated source no longer covers
black), letterbox and pillarbox bars, an editor's or a screenshot's padding: none of it is part of
the scene, but inside a passive-liveness crop it reads as the dark surround of a print or a phone
held up to the camera. ``detect_fill`` finds it once per still image; ``content_crop`` then keeps a
model's crop inside the picture the way ``crop_box`` keeps it inside the image.

Camera frames are never passed here (``edgeface.liveness.passive``): a webcam's crushed blacks can
be exactly 0, and the 4.0x model needs that dark context to see a phone's bezel.

What separates fill from a dark part of the scene that touches the edge (a black shirt, a night
sky, a dark stage) is geometry, not darkness: padding lies *outside* a convex picture (a rectangle,
or a rotated one clipped by the frame) and meets it along straight edges where the picture's own
pixels begin at once. So a pixel is fill when it is near-black in every channel, connected to the
image border through near-black pixels, outside the convex hull of the picture (every region that
is not border-connected black, text and specks aside), and part of a piece whose inner edge is
lined with picture pixels that are not near-black. A dark shirt or suit at the bottom lies inside
that hull (the picture's pixels surround it on both sides); a dark corner of a night scene or a bar
is cut off by the hull, but the chord that cuts it runs on through darkness, so its edge test fails.
On dev/ the rule fires on exactly the four pillarboxed copies of one photo and on none of the 68
others, though 33 of them have near-black shirts, suits, hair or night backgrounds touching the
border (1-42 % of the image, 12 over 5 %); on the
two clips' 380 frames it fires on 9 (a 0.5 % wedge in the corner of a dark audience shot), which
is why camera frames are not given to it.

Pure and vectorised (OpenCV connected components, one hull, an integral image); no per-pixel
Python loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edgeface.data import BBox

# Near-black in every channel. True fill is 0, and JPEG ringing next to the picture's edge lifts it
# a little (LFW's detected fill: half exactly 0, 99 % at or under 10); 16 leaves margin. Dark scenery
# under it is told apart by the geometry (module docstring), not by this level.
FILL_LEVEL = 16
# A piece of fill smaller than this share of the image is ignored: it cannot move a crop's share of
# fill past ``MAX_CROP_FILL`` by much, and tiny dark specks at the edge are JPEG noise.
MIN_PIECE_SHARE = 0.002
# The band inside a fill piece's edge (pixels) and the share of it that must be picture, not
# near-black. Padding meets the picture along its edge: dev/'s pillarbox bars 0.94-1.0, LFW View 1's
# fill pieces median 0.89 (89 % of them >= 0.7; lower where dark clothing runs into the fill). The
# dark scenery of dev/ cut off by the hull meets more darkness: at most 0.58. A narrower band is
# fooled by the staircase of a slightly rotated edge (3 px: LFW median 0.65).
EDGE_BAND_PX = 10
MIN_EDGE_PICTURE = 0.7
# Fill detection runs on the image scaled so its longer side is at most this: the geometry needs
# no more, and a 50 MP photo's label image would take 200 MB on a Pi.
ANALYSIS_SIDE = 1024
# The share of a crop that may be fill: the picture's anti-aliased edge and a pixel of JPEG bleed
# along it, not a visible black wedge.
MAX_CROP_FILL = 0.01
# When no crop down to the face box gets under MAX_CROP_FILL (a second face at the picture's edge,
# cut by the padding), the crop with the least fill is still judged if at most this share of it is
# padding: the models then see the face, not the padding. On LFW View 1 such faces' least-fill crops
# are 1-8 % fill but one (12 %), and refused as often as other faces (8 of 88).
MAX_FACE_FILL = 0.1
# Crop scales tried, largest first, down to the face box itself; positions are tried on a grid of
# at most this many steps along each axis (the best one within a few pixels is as good).
SCALE_STEP = 0.05
POSITION_STEPS = 48

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class BorderFill:
    """Where one still image is fill: an integral image of the fill mask at ``factor`` x the image's size."""

    integral: npt.NDArray[np.int64]  # (h + 1, w + 1) cumulative fill counts of the analysis mask
    factor: float  # analysis size / image size (1.0 for images up to ANALYSIS_SIDE)
    share: float  # fill's share of the whole image

    def crop_share(self, box: tuple[int, int, int, int]) -> float:
        """Share of fill inside an inclusive (x0, y0, x1, y1) box in image pixels."""
        shares = self.shares(np.array([box[0]]), np.array([box[1]]), box[2] - box[0], box[3] - box[1])
        return float(shares[0, 0])

    def shares(
        self, xs: npt.NDArray[np.int64], ys: npt.NDArray[np.int64], width: int, height: int
    ) -> npt.NDArray[np.float64]:
        """Fill share of every box with top-left (x, y) for y in ``ys`` (rows) and x in ``xs`` (columns).

        ``width``/``height`` are inclusive spans in image pixels (x1 - x0), as ``crop_box`` returns them.
        """
        h, w = self.integral.shape[0] - 1, self.integral.shape[1] - 1
        f = self.factor
        ax0 = np.clip(np.floor(xs * f).astype(np.int64), 0, w - 1)
        ay0 = np.clip(np.floor(ys * f).astype(np.int64), 0, h - 1)
        ax1 = np.clip(np.ceil((xs + width + 1) * f).astype(np.int64), ax0 + 1, w)
        ay1 = np.clip(np.ceil((ys + height + 1) * f).astype(np.int64), ay0 + 1, h)
        s = self.integral
        counts = s[ay1[:, None], ax1[None, :]] - s[ay0[:, None], ax1[None, :]]
        counts = counts - s[ay1[:, None], ax0[None, :]] + s[ay0[:, None], ax0[None, :]]
        areas = (ay1 - ay0)[:, None] * (ax1 - ax0)[None, :]
        return np.asarray(counts / areas, dtype=np.float64)


def _dark(image: npt.NDArray[np.uint8]) -> BoolArray:
    """Near-black in every channel (grey, BGR or BGRA; alpha is not a colour)."""
    if image.ndim == 2:
        return np.asarray(image <= FILL_LEVEL)
    return np.asarray((image[..., :3] <= FILL_LEVEL).all(axis=2))


def _border_connected(mask: BoolArray) -> BoolArray:
    """The pixels of ``mask`` connected (8-way) to the image's border through ``mask``."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(mask)
    edge = np.concatenate((labels[0], labels[-1], labels[:, 0], labels[:, -1]))
    touching = np.zeros(count, dtype=bool)
    touching[edge] = True
    touching[0] = False  # background
    return np.asarray(touching[labels])


def _picture_hull(picture: BoolArray) -> BoolArray | None:
    """The convex hull of ``picture``'s regions of at least MIN_PIECE_SHARE of the image.

    Smaller regions are left out: text or a logo inside a bar, JPEG specks in the fill.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(picture.astype(np.uint8), connectivity=8)
    big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= MIN_PIECE_SHARE * picture.size)
    big = big[big > 0]
    if big.size == 0:
        return None
    keep = np.zeros(count, dtype=np.uint8)
    keep[big] = 1
    contours, _ = cv2.findContours(keep[labels], cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros(picture.shape, dtype=np.uint8)
    cv2.fillConvexPoly(out, cv2.convexHull(np.concatenate(contours)), (1,))
    return np.asarray(out.astype(bool))


def _framed_pieces(candidate: BoolArray, dark: BoolArray) -> BoolArray:
    """The pieces of ``candidate`` big enough to matter whose inner edge is lined with picture."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(candidate.astype(np.uint8), connectivity=8)
    min_area = MIN_PIECE_SHARE * candidate.size
    kernel = np.ones((2 * EDGE_BAND_PX + 1, 2 * EDGE_BAND_PX + 1), np.uint8)
    keep = np.zeros(count, dtype=bool)
    for label in range(1, count):  # a handful of pieces (corners, bars), not pixels
        if stats[label, cv2.CC_STAT_AREA] < min_area:
            continue
        x, y, w, h = (int(v) for v in stats[label, :4])
        x0, y0 = max(x - EDGE_BAND_PX, 0), max(y - EDGE_BAND_PX, 0)
        x1, y1 = x + w + EDGE_BAND_PX, y + h + EDGE_BAND_PX
        piece = (labels[y0:y1, x0:x1] == label).astype(np.uint8)
        band = cv2.dilate(piece, kernel).astype(bool) & ~candidate[y0:y1, x0:x1]
        picture = float((~dark[y0:y1, x0:x1][band]).mean()) if band.any() else 0.0
        keep[label] = picture >= MIN_EDGE_PICTURE
    return np.asarray(keep[labels])


def fill_mask(image: npt.NDArray[np.uint8]) -> BoolArray:
    """The fill pixels of ``image`` at analysis size (see the module docstring); never raises on odd input."""
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 2 * EDGE_BAND_PX + 1:
        return np.zeros(image.shape[:2], dtype=bool)
    factor = min(1.0, ANALYSIS_SIDE / max(image.shape[:2]))
    if factor < 1.0:
        size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
        image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    dark = _dark(image)
    outside = _border_connected(dark)
    if outside.sum() < MIN_PIECE_SHARE * outside.size:
        return np.zeros(dark.shape, dtype=bool)
    hull = _picture_hull(~outside)
    if hull is None:  # all black: no picture to keep a crop inside
        return np.zeros(dark.shape, dtype=bool)
    return _framed_pieces(outside & ~hull, dark)


def detect_fill(image: npt.NDArray[np.uint8]) -> BorderFill | None:
    """The image's border fill, or None when it has none (then crops are exactly ``crop_box``'s)."""
    mask = fill_mask(image)
    if not mask.any():
        return None
    integral = cv2.integral(mask.astype(np.uint8), sdepth=cv2.CV_32S).astype(np.int64)
    return BorderFill(integral, mask.shape[0] / image.shape[0], float(mask.mean()))


def crop_box(width: int, height: int, bbox: BBox, scale: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) inclusive: ``bbox`` scaled by ``scale`` about its centre, shifted inside the image.

    The scale is first reduced to what the image can hold, so the crop never leaves the frame (the
    source project's procedure, which the models were trained with).
    """
    box_w, box_h = max(bbox.width, 1.0), max(bbox.height, 1.0)
    scale = min((height - 1) / box_h, (width - 1) / box_w, scale)
    new_w, new_h = box_w * scale, box_h * scale
    cx, cy = bbox.x0 + box_w / 2.0, bbox.y0 + box_h / 2.0
    x0, y0 = cx - new_w / 2.0, cy - new_h / 2.0
    x1, y1 = cx + new_w / 2.0, cy + new_h / 2.0
    if x0 < 0:
        x1, x0 = x1 - x0, 0.0
    if y0 < 0:
        y1, y0 = y1 - y0, 0.0
    if x1 > width - 1:
        x0, x1 = x0 - (x1 - width + 1), float(width - 1)
    if y1 > height - 1:
        y0, y1 = y0 - (y1 - height + 1), float(height - 1)
    return int(max(x0, 0)), int(max(y0, 0)), int(x1), int(y1)


def _positions(lo: float, hi: float, centre: int) -> npt.NDArray[np.int64]:
    """Integer positions from ``lo`` to ``hi`` on a grid of at most POSITION_STEPS, plus ``centre``."""
    first, last = math.ceil(lo), math.floor(hi)
    if last < first:
        return np.array([centre], dtype=np.int64)
    grid = np.unique(np.linspace(first, last, min(POSITION_STEPS, last - first + 1)).round().astype(np.int64))
    return np.asarray(np.unique(np.append(grid, np.clip(centre, first, last))), dtype=np.int64)


def _nearest(
    mask: npt.NDArray[np.bool_], xs: npt.NDArray[np.int64], ys: npt.NDArray[np.int64], x: int, y: int
) -> tuple[int, int]:
    """The (x, y) among the positions where ``mask`` holds that is nearest (x, y)."""
    distance = np.abs(ys - y)[:, None] + np.abs(xs - x)[None, :]
    row, col = np.unravel_index(int(np.argmin(np.where(mask, distance, np.iinfo(np.int64).max))), mask.shape)
    return int(xs[col]), int(ys[row])


def content_crop(
    fill: BorderFill, width: int, height: int, bbox: BBox, scale: float
) -> tuple[int, int, int, int] | None:
    """``crop_box``'s crop, shrunk and shifted until at most MAX_CROP_FILL of it is fill.

    The largest scale wins (the models want context), then the position nearest ``crop_box``'s; a crop
    that already avoids the fill is ``crop_box``'s exactly. A face so near the padding that no crop
    down to its own box gets there (a bystander cut by the image's edge) gets the crop with the least
    fill, if that is at most MAX_FACE_FILL; otherwise None (the models would be judging padding).
    """
    box = crop_box(width, height, bbox, scale)
    share = fill.crop_share(box)
    if share <= MAX_CROP_FILL:
        return box
    # The face box, clipped to the image: every crop tried contains it.
    fx0, fy0 = max(bbox.x0, 0.0), max(bbox.y0, 0.0)
    fx1, fy1 = min(bbox.x1, width - 1.0), min(bbox.y1, height - 1.0)
    best, best_share = box, share
    s = min(scale, (height - 1) / max(bbox.height, 1.0), (width - 1) / max(bbox.width, 1.0))
    while s >= 1.0:
        x0, y0, x1, y1 = crop_box(width, height, bbox, s)
        span_w, span_h = x1 - x0, y1 - y0
        xs = _positions(max(fx1 - span_w, 0.0), min(fx0, width - 1.0 - span_w), x0)
        ys = _positions(max(fy1 - span_h, 0.0), min(fy0, height - 1.0 - span_h), y0)
        shares = fill.shares(xs, ys, span_w, span_h)
        ok = shares <= MAX_CROP_FILL
        if ok.any():
            bx, by = _nearest(ok, xs, ys, x0, y0)
            return bx, by, bx + span_w, by + span_h
        least = float(shares.min())
        if least < best_share:  # strictly less: a larger crop wins a tie
            bx, by = _nearest(shares == least, xs, ys, x0, y0)
            best, best_share = (bx, by, bx + span_w, by + span_h), least
        s -= SCALE_STEP
    return best if best_share <= MAX_FACE_FILL else None
