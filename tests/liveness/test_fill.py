"""Border fill on still images: the passive check judges the picture, not the software's padding."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface.config import VisionConfig
from edgeface.data import BBox, ImageArray
from edgeface.liveness.fill import MAX_CROP_FILL, MAX_FACE_FILL, content_crop, crop_box, detect_fill
from edgeface.liveness.passive import PassiveLiveness
from edgeface.liveness.still import StillLiveness
from edgeface.vision.analyzer import FaceAnalyzer

# An LFW View 1 photo whose corners the alignment filled black: the plain crops (the whole 250 px
# image) are refused (fused score 0.014 < 0.35), the crops inside its picture are live (0.999).
FILLED_LFW = "lfw/images/Adolfo_Aguilar_Zinser/Adolfo_Aguilar_Zinser_0001.jpg"
# dev/ photos whose dark parts touch the border (a black shirt that JPEG crushed to 0, a night-time
# background, a dark suit): scene, not fill.
DARK_EDGED = (
    "dev/paul_rudd/facenet_pytorch_1.jpg",
    "dev/_unlabelled/openface_longoria-cooper.jpg",
    "dev/joe_biden/fr_knn_train_biden_biden.jpg",
    "dev/_unlabelled/dlib_2008_007676.jpg",
)
# dev/ copies of one photo that an editor pillarboxed (black bars left and right, 26 % each).
PILLARBOXED = ("1080p", "720p", "480p", "240p")


@pytest.fixture(scope="module")
def passive() -> PassiveLiveness:
    return PassiveLiveness(VisionConfig().models_dir)


@pytest.fixture(scope="module")
def analyzer() -> Iterator[FaceAnalyzer]:
    with FaceAnalyzer.from_config(VisionConfig()) as vision:
        yield vision


def _read(path: Path) -> ImageArray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return np.asarray(image, dtype=np.uint8)


def _largest(analyzer: FaceAnalyzer, image: ImageArray) -> BBox:
    faces = analyzer.locate(image)
    assert faces
    return max(faces, key=lambda f: f.detection.bbox.width).detection.bbox


def test_a_filled_lfw_photo_is_judged_on_its_picture(
    shared_data: Path, passive: PassiveLiveness, analyzer: FaceAnalyzer
) -> None:
    image = _read(shared_data / FILLED_LFW)
    box = _largest(analyzer, image)
    fill = detect_fill(image)
    assert fill is not None and fill.share > 0.05
    plain = passive.check(image, box, fill=None)
    assert plain.live is False and plain.score is not None and plain.score < passive.threshold
    # The plain crops are the whole image, black corners included.
    assert fill.crop_share(crop_box(image.shape[1], image.shape[0], box, 2.7)) > 0.05
    judged = passive.check(image, box, fill=fill)
    assert judged.live is True and judged.score is not None and judged.score > 0.8
    for scale in (2.7, 4.0):
        crop = content_crop(fill, image.shape[1], image.shape[0], box, scale)
        assert crop is not None and fill.crop_share(crop) <= MAX_CROP_FILL
        x0, y0, x1, y1 = crop
        assert x0 <= box.x0 and y0 <= box.y0 and x1 >= box.x1 and y1 >= box.y1  # the face stays whole


def test_the_liveness_verb_judges_a_filled_photo_on_its_picture(
    shared_data: Path, passive: PassiveLiveness, analyzer: FaceAnalyzer
) -> None:
    # What the MQTT ``liveness`` command answers for the encoded file, as sent.
    reply = StillLiveness(analyzer.locate, passive).judge((shared_data / FILLED_LFW).read_bytes(), "images[0]")
    largest = reply["faces"][0]
    assert largest["live"] is True and largest["reason"] is None and largest["score"] > 0.8


def test_fill_free_photos_and_camera_frames_score_exactly_as_before(
    shared_data: Path, passive: PassiveLiveness, analyzer: FaceAnalyzer
) -> None:
    photo = _read(shared_data / "dev" / "barack_obama" / "fr_knn_train_obama_obama.jpg")
    assert detect_fill(photo) is None
    box = _largest(analyzer, photo)
    assert passive.check(photo, box, fill=detect_fill(photo)).score == passive.score(photo, box)
    capture = cv2.VideoCapture(str(shared_data / "video" / "short_hamilton_clip.mp4"))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 211)  # a dark audience shot whose top-left corner is black
    ok, frame = capture.read()
    capture.release()
    assert ok
    frame = np.asarray(frame, dtype=np.uint8)
    box = _largest(analyzer, frame)
    assert detect_fill(frame) is not None  # a still would avoid that corner; the pipeline never looks
    # The pipeline's path: plain crops, whatever the frame's dark corners.
    boxes = [crop_box(frame.shape[1], frame.shape[0], box, s) for s in (2.7, 4.0)]
    plain = [np.asarray(cv2.resize(frame[y0 : y1 + 1, x0 : x1 + 1], (80, 80))) for x0, y0, x1, y1 in boxes]
    crops = passive.crops(frame, box)
    assert all(c is not None and np.array_equal(c, p) for c, p in zip(crops, plain, strict=True))
    assert passive.score(frame, box) == passive.check(frame, box, fill=None).score


def test_a_crop_that_already_avoids_the_fill_is_the_plain_crop(shared_data: Path, analyzer: FaceAnalyzer) -> None:
    photo = _read(shared_data / "dev" / "barack_obama" / "fr_knn_train_obama_obama.jpg")
    box = _largest(analyzer, photo)
    h, w = photo.shape[:2]
    padded = np.zeros((h, 3 * w, 3), np.uint8)  # the photo between two bars as wide as itself
    padded[:, w : 2 * w] = photo
    fill = detect_fill(padded)
    assert fill is not None and abs(fill.share - 2 / 3) < 0.01
    moved = BBox(box.x0 + w, box.y0, box.x1 + w, box.y1)
    plain = crop_box(3 * w, h, moved, 2.7)
    assert fill.crop_share(plain) == 0.0  # the 2.7x crop of this face fits inside the photo
    assert content_crop(fill, 3 * w, h, moved, 2.7) == plain


def test_a_letterboxed_photo_gets_the_verdict_of_the_photo(
    shared_data: Path, passive: PassiveLiveness, analyzer: FaceAnalyzer
) -> None:
    for name in ("barack_obama/fr_knn_train_obama_obama.jpg", "emilia_clarke/cfe_2.jpg"):
        photo = _read(shared_data / "dev" / name)
        h, w = photo.shape[:2]
        bar = h // 3
        boxed = np.zeros((h + 2 * bar, w, 3), np.uint8)  # a letterbox: black bars above and below
        boxed[bar : bar + h] = photo
        box = _largest(analyzer, photo)
        moved = BBox(box.x0, box.y0 + bar, box.x1, box.y1 + bar)
        fill = detect_fill(boxed)
        assert fill is not None and abs(fill.share - 2 * bar / boxed.shape[0]) < 0.02, name
        alone = passive.check(photo, box, fill=None)
        boxed_result = passive.check(boxed, moved, fill=fill)
        assert alone.live is True and boxed_result.live is alone.live, (name, alone, boxed_result)
        assert boxed_result.score is not None and alone.score is not None
        assert abs(boxed_result.score - alone.score) < 0.1, name


def test_the_spoof_samples_keep_their_decisions(
    shared_data: Path, passive: PassiveLiveness, analyzer: FaceAnalyzer
) -> None:
    spoof = shared_data / "spoof"
    for path, live in (
        (spoof / "real" / "silentface_image_T1.jpg", True),
        (spoof / "fake" / "silentface_image_F1.jpg", False),  # a print
        (spoof / "fake" / "silentface_image_F2.jpg", False),  # a phone screen
    ):
        image = _read(path)
        box = _largest(analyzer, image)
        assert passive.check(image, box, fill=detect_fill(image)).live is live, path


def test_dark_scenery_at_the_edge_is_not_fill_and_editor_bars_are(shared_data: Path) -> None:
    for name in DARK_EDGED:
        assert detect_fill(_read(shared_data / name)) is None, name
    for size in PILLARBOXED:
        fill = detect_fill(_read(shared_data / "dev" / "_variants" / "barack_obama" / f"fr_obama-{size}.jpg"))
        assert fill is not None and 0.5 < fill.share < 0.55, size


def _padded_over_face(shared_data: Path, analyzer: FaceAnalyzer, share: float) -> tuple[ImageArray, BBox]:
    """A dev/ photo with black padding from its left edge over ``share`` of its largest face's width."""
    photo = _read(shared_data / "dev" / "barack_obama" / "fr_knn_train_obama_obama.jpg")
    box = _largest(analyzer, photo)
    cut = photo.copy()
    cut[:, : int(box.x0 + box.width * share)] = 0
    return cut, box


def test_a_face_cut_by_the_padding_is_not_judged(
    shared_data: Path, passive: PassiveLiveness, analyzer: FaceAnalyzer
) -> None:
    cut, box = _padded_over_face(shared_data, analyzer, 0.5)
    result = passive.check(cut, box, fill=detect_fill(cut))
    assert (result.live, result.score, result.reason) == (None, None, "too_close")


def test_a_face_the_padding_only_clips_is_judged_on_its_least_padded_crop(
    shared_data: Path, passive: PassiveLiveness, analyzer: FaceAnalyzer
) -> None:
    cut, box = _padded_over_face(shared_data, analyzer, 0.05)
    fill = detect_fill(cut)
    assert fill is not None
    for scale in (2.7, 4.0):
        crop = content_crop(fill, cut.shape[1], cut.shape[0], box, scale)
        assert crop is not None and MAX_CROP_FILL < fill.crop_share(crop) <= MAX_FACE_FILL
    result = passive.check(cut, box, fill=fill)
    assert result.live is True and result.reason is None


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((480, 640, 3), np.uint8),  # all black
        np.full((480, 640, 3), 255, np.uint8),  # all white
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((5, 9, 3), np.uint8),
        np.pad(np.full((100, 100), 200, np.uint8), 50),  # grey, framed
        np.pad(np.full((100, 100, 4), 200, np.uint8), ((50, 50), (50, 50), (0, 0))),  # BGRA, framed
    ],
    ids=["black", "white", "1x1", "5x9", "gray", "bgra"],
)
def test_fill_detection_never_raises_on_odd_images(image: ImageArray) -> None:
    fill = detect_fill(image)
    if image.shape[0] < 20 or image.max() in (0, 255):
        assert fill is None
    else:  # a picture framed by padding on all four sides
        assert fill is not None and abs(fill.share - 0.75) < 0.02
