"""Assemble liveness evaluation sets (real/ + fake/) outside the repo, for ``edgeface eval liveness``.

    python scripts/liveness_sets.py bona-fide OUT [--data ../shared/data]
        real/: links to every photo of dev/ and of lfw/view1_*.csv, and every frame of both clips (PNG).
    python scripts/liveness_sets.py photos OUT [--data ../shared/data]
        three sets of bona fide photos, each OUT/<set>/real/: dev, lfw-clean and lfw-filled -- LFW View 1
        split by the black fill its alignment left (see ``alignment_fill``), which the passive model reads
        as the dark surround of a replayed picture unless the crops avoid it (``edgeface.liveness.fill``).
    python scripts/liveness_sets.py attacks OUT [--data ../shared/data] [--seed 1]
        fake/: synthetic print and screen attacks made from the dev/ photos and 200 LFW View 1 photos --
        stills, and moving ones (videos) -- plus real/: the photos they were made from, as stills.

The attacks are synthetic, not real: they imitate what a camera sees of a print or a screen, with
the artefacts the passive model was trained to notice, but no paper, ink, panel or lens was
involved. Real attacks differ (docs/liveness.md).

Print (from one photo): paper's narrower dynamic range and a warm white point; an ordered halftone
screen (a rotated dot pattern at 3-5 px); paper grain and low-frequency mottling; a white margin;
the sheet curved (cylindrical warp) and lit from one side (a brightness gradient); laid on a
background (another photo, blurred); re-captured: defocus blur, sensor noise, JPEG.
Screen (from one photo): the image re-sampled onto an RGB sub-pixel grid at 3x and captured down
with a slight rotation (moire); display gamma and a blue tint; a glare patch; a black bezel; refresh
banding (horizontal brightness bands); defocus blur, sensor noise, JPEG.
Moving: a print or screen (one still each) swept by a smooth homography over 3 s at 15 fps --
shifted, scaled, rolled and tilted, as a hand holds it -- and a screen replaying the Hamilton clip
(a live video: its faces blink and move, so only the passive check can stop it).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
FRAME = (640, 480)  # (w, h) of a synthetic capture
LFW_ATTACK_SOURCES = 200
# LFW's deep-funnelled images were rotated and warped to align the faces, and the corners the source
# photo no longer covers were filled with black: a tilted picture framed by a dark wedge, which is how a
# print or a phone held up to a camera looks. A photo whose outer 4 px ring is more than half near-black
# (< 8 of 255) is "filled"; no camera frame is, so BPCER is reported on both halves of View 1.
FILL_RING_PX, FILL_DARK, FILL_FRACTION = 4, 8, 0.5
MOVING_SECONDS, MOVING_FPS = 3.0, 15


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        dst.symlink_to(src.resolve())


def lfw_view1(data: Path) -> list[Path]:
    """Every image named by LFW View 1 (train and test), once."""
    paths: dict[Path, None] = {}
    for name in ("view1_train.csv", "view1_test.csv"):
        with (data / "lfw" / name).open(newline="") as handle:
            for row in csv.DictReader(handle):
                paths[data / "lfw" / row["file_a"]] = None
                paths[data / "lfw" / row["file_b"]] = None
    return list(paths)


def dev_photos(data: Path) -> list[Path]:
    return sorted(p for p in (data / "dev").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def bona_fide(data: Path, out: Path) -> None:
    for photo in dev_photos(data):
        _link(photo, out / "real" / "dev" / photo.relative_to(data / "dev"))
    for photo in lfw_view1(data):
        _link(photo, out / "real" / "lfw" / photo.relative_to(data / "lfw" / "images"))
    for clip in sorted((data / "video").glob("*.mp4")):
        folder = out / "real" / "clips" / clip.stem
        folder.mkdir(parents=True, exist_ok=True)
        capture = cv2.VideoCapture(str(clip))
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            cv2.imwrite(str(folder / f"{index:05d}.png"), frame)
            index += 1
        capture.release()
        print(f"{clip.name}: {index} frames")


def alignment_fill(image: Array) -> float:
    """The fraction of the image's outer ring that is near-black (LFW's alignment fill)."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    r = FILL_RING_PX
    ring = np.concatenate((gray[:r].ravel(), gray[-r:].ravel(), gray[r:-r, :r].ravel(), gray[r:-r, -r:].ravel()))
    return float((ring < FILL_DARK).mean())


def photos(data: Path, out: Path) -> None:
    for photo in dev_photos(data):
        _link(photo, out / "dev" / "real" / photo.relative_to(data / "dev"))
    counts = {"lfw-clean": 0, "lfw-filled": 0}
    for photo in lfw_view1(data):
        image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        if image is None:
            continue
        name = "lfw-filled" if alignment_fill(image) > FILL_FRACTION else "lfw-clean"
        counts[name] += 1
        _link(photo, out / name / "real" / photo.relative_to(data / "lfw" / "images"))
    print(", ".join(f"{name}: {n} photos" for name, n in counts.items()))


# --- synthesis -----------------------------------------------------------------------------------


def _fit(image: Array, width: int, height: int) -> Array:
    scale = min(width / image.shape[1], height / image.shape[0])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _background(rng: np.random.Generator, other: Array) -> Array:
    bg = cv2.resize(other, FRAME, interpolation=cv2.INTER_AREA).astype(np.float32)
    bg = cv2.GaussianBlur(bg, (0, 0), rng.uniform(4, 10))
    return bg * rng.uniform(0.5, 0.9)


def _recapture(rng: np.random.Generator, frame: Array) -> Array:
    x = cv2.GaussianBlur(frame, (0, 0), rng.uniform(0.4, 1.2))
    x = x + rng.normal(0, rng.uniform(1.5, 5.0), x.shape)
    x = np.clip(x, 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 95))])
    assert ok
    return np.asarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR))


def _place(rng: np.random.Generator, sheet: Array, mask: Array, bg: Array) -> Array:
    """Warp ``sheet`` (float) into ``bg`` with a mild random perspective; returns the float frame."""
    h, w = sheet.shape[:2]
    fw, fh = FRAME
    scale = rng.uniform(0.75, 0.95) * min(fw / w, fh / h)
    cx, cy = fw / 2 + rng.uniform(-0.08, 0.08) * fw, fh / 2 + rng.uniform(-0.06, 0.06) * fh
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    corners = np.float32([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]]) * scale
    corners += rng.uniform(-0.04, 0.04, corners.shape).astype(np.float32) * np.float32([w, h]) * scale
    angle = math.radians(rng.uniform(-8, 8))
    rot = np.float32([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    dst = (corners @ rot.T + np.float32([cx, cy])).astype(np.float32)
    homography = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(sheet, homography, FRAME, flags=cv2.INTER_LINEAR)
    alpha = cv2.warpPerspective(mask, homography, FRAME, flags=cv2.INTER_LINEAR)[..., None]
    return np.asarray(warped * alpha + bg * (1 - alpha))


def print_sheet(rng: np.random.Generator, photo: Array) -> tuple[Array, Array]:
    """The printed sheet (float BGR) and its mask: halftone, paper, margin, curvature, side light."""
    img = _fit(photo, 420, 420).astype(np.float32)
    h, w = img.shape[:2]
    img = 20 + img * rng.uniform(0.72, 0.85)  # paper and ink: a narrower range, no deep black
    img *= np.float32([rng.uniform(0.9, 0.97), rng.uniform(0.96, 1.0), 1.0])  # warm white point (BGR)
    pitch, angle = rng.uniform(3.0, 5.0), math.radians(rng.uniform(15, 75))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / pitch
    v = (-xx * math.sin(angle) + yy * math.cos(angle)) * 2 * math.pi / pitch
    screen = (np.cos(u) * np.cos(v))[..., None]
    img = img * (1 + rng.uniform(0.08, 0.2) * screen)
    grain = rng.normal(0, rng.uniform(2, 6), (h, w, 1)).astype(np.float32)
    mottle = cv2.resize(rng.normal(0, 1, (8, 8)).astype(np.float32), (w, h))[..., None] * rng.uniform(3, 8)
    img = img + grain + mottle
    margin = int(rng.integers(12, 40))
    sheet = np.full((h + 2 * margin, w + 2 * margin, 3), rng.uniform(225, 245), np.float32)
    sheet += rng.normal(0, 2, sheet.shape).astype(np.float32)
    sheet[margin : margin + h, margin : margin + w] = img
    sh, sw = sheet.shape[:2]
    # Curvature: a cylinder bend about the vertical axis, compressing the sides.
    bend = rng.uniform(0.0, 0.25)
    xs = np.linspace(-1, 1, sw, dtype=np.float32)
    src_x = (np.sin(xs * (1 + bend) * math.pi / 2) / math.sin((1 + bend) * math.pi / 2) + 1) * (sw - 1) / 2
    map_x = np.tile(src_x, (sh, 1)).astype(np.float32)
    map_y = np.tile(np.arange(sh, dtype=np.float32)[:, None], (1, sw))
    sheet = cv2.remap(sheet, map_x, map_y, cv2.INTER_LINEAR)
    mask = cv2.remap(np.ones((sh, sw), np.float32), map_x, map_y, cv2.INTER_LINEAR)  # the bent edges show background
    light = np.linspace(rng.uniform(0.6, 0.9), rng.uniform(1.0, 1.2), sw, dtype=np.float32)
    if rng.random() < 0.5:
        light = light[::-1]
    sheet = sheet * light[None, :, None] * (1 - 0.25 * bend * np.abs(xs))[None, :, None]
    return sheet, mask


def screen_panel(rng: np.random.Generator, photo: Array) -> tuple[Array, Array]:
    """The displayed image (float BGR) with bezel and its mask: sub-pixel grid, gamma, tint, glare, banding."""
    img = _fit(photo, 400, 400).astype(np.float32) / 255.0
    img = img ** rng.uniform(0.8, 1.25)  # display gamma differs from the camera's
    img *= np.float32([rng.uniform(1.0, 1.12), 1.0, rng.uniform(0.9, 1.0)])  # blue tint (BGR)
    h, w = img.shape[:2]
    # Sub-pixel grid: each pixel as three vertical stripes B, G, R at 3x, with dark gaps.
    big = cv2.resize(img, (w * 3, h * 3), interpolation=cv2.INTER_NEAREST)
    stripes = np.zeros((1, w * 3, 3), np.float32)
    for c, channel in enumerate((0, 1, 2)):
        stripes[0, c::3, channel] = 1.0
    depth = rng.uniform(0.1, 0.3)  # how much of the grid survives the camera's optics
    big = big * (1 - depth + depth * 3.0 * stripes)  # the mean stays 1
    big[2::3] *= rng.uniform(0.8, 0.95)  # row gaps
    angle = rng.uniform(-3, 3)
    rot = cv2.getRotationMatrix2D((w * 1.5, h * 1.5), angle, 1.0)
    big = cv2.warpAffine(big, rot, (w * 3, h * 3), flags=cv2.INTER_LINEAR)
    img = cv2.resize(big, (w, h), interpolation=cv2.INTER_LINEAR)  # the camera under-samples: moire
    rows = np.arange(h, dtype=np.float32)[:, None, None]
    img *= 1 + rng.uniform(0.03, 0.1) * np.sin(rows * 2 * math.pi / rng.uniform(15, 60) + rng.uniform(0, 6.3))
    gy, gx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    glare = np.exp(-(((xx - gx) / (0.3 * w)) ** 2 + ((yy - gy) / (0.2 * h)) ** 2))[..., None]
    img = img * 255.0 * rng.uniform(0.8, 1.0) + glare * rng.uniform(20, 80)
    bezel = int(rng.integers(10, 30))
    panel = np.full((h + 2 * bezel, w + 2 * bezel, 3), rng.uniform(5, 25), np.float32)
    panel[bezel : bezel + h, bezel : bezel + w] = img
    return panel, np.ones(panel.shape[:2], np.float32)


def attack_still(rng: np.random.Generator, kind: str, photo: Array, other: Array) -> Array:
    sheet, mask = (print_sheet if kind == "print" else screen_panel)(rng, photo)
    return _recapture(rng, _place(rng, sheet, mask, _background(rng, other)))


def _sweep(rng: np.random.Generator, sheet: Array, mask: Array, bg: Array, t: float) -> Array:
    """``sheet`` held by a hand at time ``t``: slow shift, scale, roll and tilt."""
    h, w = sheet.shape[:2]
    fw, fh = FRAME
    phase = rng.uniform(0, 6.3, 5)
    scale = 0.8 * min(fw / w, fh / h) * (1 + 0.08 * math.sin(1.3 * t + phase[0]))
    cx = fw / 2 + 40 * math.sin(0.9 * t + phase[1])
    cy = fh / 2 + 20 * math.sin(1.1 * t + phase[2])
    roll = math.radians(6 * math.sin(0.7 * t + phase[3]))
    tilt = 0.12 * math.sin(1.2 * t + phase[4])  # one side nearer the camera
    corners = np.float32([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]]) * scale
    corners[:, 1] *= np.float32([1 - tilt, 1 + tilt, 1 + tilt, 1 - tilt])
    rot = np.float32([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]])
    dst = (corners @ rot.T + np.float32([cx, cy])).astype(np.float32)
    homography = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), dst)
    warped = cv2.warpPerspective(sheet, homography, FRAME)
    alpha = cv2.warpPerspective(mask, homography, FRAME)[..., None]
    return np.asarray(warped * alpha + bg * (1 - alpha))


def _write_video(path: Path, frames: list[Array], fps: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, FRAME)
    for frame in frames:
        writer.write(frame)
    writer.release()


def attacks(data: Path, out: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lfw = lfw_view1(data)
    sources = dev_photos(data) + [lfw[i] for i in rng.choice(len(lfw), LFW_ATTACK_SOURCES, replace=False)]
    sources = [p for p in sources if "_negatives" not in p.parts]
    photos = [(p, cv2.imread(str(p), cv2.IMREAD_COLOR)) for p in sources]
    photos = [(p, im) for p, im in photos if im is not None]
    for i, (path, photo) in enumerate(photos):
        name = f"{i:04d}_{path.stem}"
        _link(path, out / "real" / "sources" / f"{name}{path.suffix}")
        other = photos[(i + 7) % len(photos)][1]
        for kind in ("print", "screen"):
            target = out / "fake" / kind / f"{name}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(target), attack_still(rng, kind, photo, other))
    # Moving attacks: every fifth dev photo as a swept print and a swept screen.
    for i, (path, photo) in enumerate(photos[: len(dev_photos(data))][::5]):
        other = photos[(i + 3) % len(photos)][1]
        for kind in ("print", "screen"):
            sheet, mask = (print_sheet if kind == "print" else screen_panel)(rng, photo)
            bg = _background(rng, other)
            frames = [
                _recapture(rng, _sweep(rng, sheet, mask, bg, k / MOVING_FPS))
                for k in range(int(MOVING_SECONDS * MOVING_FPS))
            ]
            _write_video(out / "fake" / f"moving_{kind}" / f"{i:03d}_{path.stem}.mp4", frames, MOVING_FPS)
    # A screen replaying a live clip, frame by frame through the same display model.
    clip = cv2.VideoCapture(str(data / "video" / "short_hamilton_clip.mp4"))
    state = np.random.default_rng(seed + 1)
    frames = []
    panel_rng_seed = int(state.integers(1 << 30))
    while len(frames) < int(MOVING_SECONDS * 30):
        ok, frame = clip.read()
        if not ok:
            break
        panel, mask = screen_panel(np.random.default_rng(panel_rng_seed), frame)
        frames.append(
            _recapture(
                state,
                _place(
                    np.random.default_rng(panel_rng_seed), panel, mask, np.full((FRAME[1], FRAME[0], 3), 60, np.float32)
                ),
            )
        )
    clip.release()
    _write_video(out / "fake" / "replayed_clip" / "hamilton_on_screen.mp4", frames, 30.0)
    print(f"{len(photos)} source photos -> {2 * len(photos)} still attacks; moving attacks in {out / 'fake'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["bona-fide", "photos", "attacks"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.what == "bona-fide":
        bona_fide(args.data, args.out)
    elif args.what == "photos":
        photos(args.data, args.out)
    else:
        attacks(args.data, args.out, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
