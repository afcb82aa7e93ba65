"""Decoding real photos in every supported form, and refusing what is not an image or is too large."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface.errors import ImageError
from edgeface.vision.imageio import (
    ImageTooLargeError,
    decode_image,
    ensure_bgr,
    header_size,
    load_image,
    sniff_format,
    unsupported_format,
)

from .support import ImageLoader


def _encode(image: np.ndarray, ext: str, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def _with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an EXIF APP1 segment carrying only the orientation tag, right after SOI."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    app1 = b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">I", 8) + ifd
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def test_jpeg_decodes_like_opencv(samples_dir: Path) -> None:
    data = (samples_dir / "obama.jpg").read_bytes()
    image = decode_image(data)
    assert image.dtype == np.uint8 and image.shape == (1137, 910, 3)
    np.testing.assert_array_equal(image, cv2.imread(str(samples_dir / "obama.jpg")))
    assert header_size(data) == (910, 1137)


@pytest.mark.parametrize(("orientation", "turn"), [(6, -1), (8, 1), (3, 2)])
def test_exif_orientation_is_applied(face_image: ImageLoader, orientation: int, turn: int) -> None:
    upright = face_image("biden.jpg")
    data = _with_orientation(_encode(upright, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 95), orientation)
    plain = decode_image(_encode(upright, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 95))
    np.testing.assert_array_equal(decode_image(data), np.rot90(plain, turn))


@pytest.mark.parametrize(("ext", "params"), [(".png", ()), (".bmp", ()), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101))])
def test_lossless_formats_round_trip(face_image: ImageLoader, ext: str, params: tuple[int, ...]) -> None:
    image = face_image("obama2.jpg")
    data = _encode(image, ext, *params)
    assert header_size(data) == (image.shape[1], image.shape[0])
    np.testing.assert_array_equal(decode_image(data), image)


def test_opaque_rgba_png_keeps_its_colours(samples_dir: Path) -> None:
    data = (samples_dir / "32bit.png").read_bytes()
    rgba = cv2.imread(str(samples_dir / "32bit.png"), cv2.IMREAD_UNCHANGED)
    assert rgba.shape[2] == 4 and (rgba[..., 3] == 255).all()
    np.testing.assert_array_equal(decode_image(data), rgba[..., :3])


def test_transparent_pixels_become_white(samples_dir: Path) -> None:
    rgba = cv2.imread(str(samples_dir / "32bit.png"), cv2.IMREAD_UNCHANGED)
    rgba[:, : rgba.shape[1] // 2, 3] = 0  # cut out the left half
    rgba[:, rgba.shape[1] // 2 :, 3] = 128  # and make the rest half transparent
    image = decode_image(_encode(rgba, ".png"))
    assert image.shape == (*rgba.shape[:2], 3)
    assert (image[:, : rgba.shape[1] // 2] == 255).all()
    expected = np.round(rgba[:, rgba.shape[1] // 2 :, :3] * (128 / 255) + 255 * (127 / 255))
    assert np.abs(image[:, rgba.shape[1] // 2 :].astype(int) - expected).max() <= 1


def test_grey_and_sixteen_bit_images_become_bgr8(face_image: ImageLoader) -> None:
    image = face_image("obama.jpg")
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    for data in (_encode(grey, ".png"), _encode(grey, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 100)):
        out = decode_image(data)
        assert out.shape == image.shape
        np.testing.assert_array_equal(out[..., 0], out[..., 2])
    deep = image.astype(np.uint16) * 257  # the same photo as a 16-bit PNG
    np.testing.assert_array_equal(decode_image(_encode(deep, ".png")), image)


def test_too_many_pixels_are_refused_before_decoding(face_image: ImageLoader) -> None:
    image = face_image("obama.jpg")
    with pytest.raises(ImageTooLargeError, match=r"910x1137 = 1,034,670 pixels, more than the 1,000,000 allowed"):
        decode_image(_encode(image, ".jpg"), max_pixels=1_000_000)
    # A PNG header claiming 100k x 100k pixels (a decompression bomb's first bytes) is refused as
    # such, without OpenCV ever allocating it.
    header = _encode(image, ".png")[:33]
    bomb = header[:16] + struct.pack(">II", 100_000, 100_000) + header[24:]
    with pytest.raises(ImageTooLargeError, match="100000x100000"):
        decode_image(bomb)
    assert issubclass(ImageTooLargeError, ImageError)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 64, b"\x89PNG\r\n\x1a\n" + b"\x00" * 40],
    ids=["empty", "text", "jpeg-header-only", "png-header-only"],
)
def test_undecodable_bytes_are_an_image_error(data: bytes) -> None:
    with pytest.raises(ImageError, match=r"empty|not a decodable image|could not be decoded"):
        decode_image(data)


def test_truncated_photo_is_an_image_error(samples_dir: Path) -> None:
    data = (samples_dir / "obama.jpg").read_bytes()
    with pytest.raises(ImageError, match="not a decodable image"):
        decode_image(data[: len(data) // 2])


def test_load_image_names_the_file(samples_dir: Path, tmp_path: Path) -> None:
    assert load_image(samples_dir / "biden.jpg").shape == (2204, 970, 3)
    with pytest.raises(ImageError, match=r"missing\.jpg cannot be read"):
        load_image(tmp_path / "missing.jpg")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"garbage")
    with pytest.raises(ImageError, match=r"broken\.png: 7 bytes"):
        load_image(broken)


def test_ensure_bgr_explains_what_it_got(face_image: ImageLoader) -> None:
    image = face_image("obama.jpg")
    assert ensure_bgr(image) is image  # already contiguous: no copy
    with pytest.raises(ImageError, match=r"shape \(1137, 910\)"):
        ensure_bgr(image[..., 0])
    with pytest.raises(ImageError, match="float32"):
        ensure_bgr(image.astype(np.float32))
    with pytest.raises(ImageError, match="got bytes"):
        ensure_bgr(b"\xff\xd8")
    with pytest.raises(ImageError, match="empty image"):
        ensure_bgr(image[:0])


@pytest.mark.parametrize(
    ("ext", "name"), [(".jpg", "jpeg"), (".png", "png"), (".webp", "webp"), (".bmp", "bmp"), (".tiff", None)]
)
def test_format_is_told_by_its_magic_bytes(face_image: ImageLoader, ext: str, name: str | None) -> None:
    data = cv2.imencode(ext, face_image("obama.jpg"))[1].tobytes()
    assert sniff_format(data) == name
    assert unsupported_format(data) == (None if name else "TIFF")


def test_other_formats_are_named_and_noise_is_not() -> None:
    assert unsupported_format(b"GIF89a" + bytes(20)) == "GIF"
    assert unsupported_format(b"\x00\x00\x00\x18ftypheic" + bytes(20)) == "HEIF"
    assert unsupported_format(b"hello world, not an image") is None
    assert sniff_format(b"hello world, not an image") is None
