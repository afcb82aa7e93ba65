"""Decoding still images (enrollment photos, eval sets) into the BGR uint8 arrays every stage expects.

Policy, with the reasons:
- The pixel count is read from the file header and checked *before* decoding, so an 8 MB PNG that
  inflates to gigabytes (a decompression bomb sent over MQTT) is refused without allocating it.
- JPEGs are decoded with ``IMREAD_COLOR``, which applies the EXIF orientation tag: phone photos are
  stored sideways with a rotate flag, and a sideways face is not detected.
- Other formats are decoded unchanged so that alpha and 16-bit data are handled here explicitly:
  alpha is composited on white, because the colour under transparent pixels is undefined (often
  black or editor leftovers) and white is how viewers showed the picture to whoever chose it; 16-bit
  is scaled to 8 bits (x / 257, rounded), keeping the full range instead of OpenCV's truncating shift.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edgeface.data import ImageArray
from edgeface.errors import ImageError

# 50 MP: larger than any phone or DSLR photo worth enrolling, and 150 MB as BGR -- what a 2 GB
# Raspberry Pi can allocate next to the running daemon without being OOM-killed.
MAX_PIXELS = 50_000_000

_JPEG = b"\xff\xd8\xff"
_PNG = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); C4, C8, CC are not SOFs.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageTooLargeError(ImageError):
    """The image has more pixels than allowed (commands map this to ``too_large``)."""


def ensure_bgr(image: object) -> ImageArray:
    """``image`` as a contiguous HxWx3 uint8 array, or an ImageError saying what it is instead."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a BGR image array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"expected an HxWx3 uint8 BGR image, got shape {image.shape} dtype {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(width), int(height)
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length field
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        i += 2 + int(length)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return int(width) & 0x3FFF, int(height) & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        (bits,) = struct.unpack("<I", data[21:25])
        return (int(bits) & 0x3FFF) + 1, ((int(bits) >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG, PNG, WebP or BMP header; None for other or unreadable headers."""
    if data.startswith(_JPEG):
        return _jpeg_size(data)
    if data.startswith(_PNG) and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        (header,) = struct.unpack("<I", data[14:18])
        if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
            width, height = struct.unpack("<HH", data[18:22])
        else:
            width, height = struct.unpack("<ii", data[18:26])
        return abs(int(width)), abs(int(height))
    return None


# Formats recognised by their first bytes only to name them in a refusal; OpenCV would decode some
# (TIFF, PFM, JPEG 2000) but they are not part of the API, and a client should not depend on them.
_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
)
SUPPORTED_FORMATS = ("jpeg", "png", "webp", "bmp")


def sniff_format(data: bytes) -> str | None:
    """``jpeg``/``png``/``webp``/``bmp`` from the magic bytes, or None when it is none of them."""
    if data.startswith(_JPEG):
        return "jpeg"
    if data.startswith(_PNG):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    return None


def unsupported_format(data: bytes) -> str | None:
    """The name of a known image format we do not accept (``GIF``, ``HEIF`` ...), or None."""
    for magic, name in _OTHER_MAGIC:
        if data.startswith(magic):
            return name
    if data[4:8] == b"ftyp":  # ISO base media: HEIC/AVIF photos from phones
        brand = data[8:12]
        return "AVIF" if brand in (b"avif", b"avis") else "HEIF"
    return None


def _u8(image: npt.NDArray[Any]) -> ImageArray:
    return np.asarray(image, dtype=np.uint8)


def _to_bgr8(image: npt.NDArray[Any]) -> ImageArray:
    if image.dtype == np.uint16:
        image = np.round(image.astype(np.float32) / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"unsupported sample type {image.dtype} (expected 8- or 16-bit)")
    if image.ndim == 2:
        return _u8(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    channels = image.shape[2]
    if channels == 1:
        return _u8(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    if channels == 3:
        return _u8(image)
    if channels in (2, 4):
        colour = cv2.cvtColor(image[..., :1], cv2.COLOR_GRAY2BGR) if channels == 2 else image[..., :3]
        alpha = image[..., -1:].astype(np.float32) / 255.0
        blended = colour.astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return _u8(np.round(blended))
    raise ImageError(f"unsupported channel count {channels}")


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> ImageArray:
    """Decode JPEG/PNG/WebP/BMP bytes into BGR uint8 (EXIF orientation applied, alpha on white)."""
    if not data:
        raise ImageError("empty image data (0 bytes)")
    size = header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageTooLargeError(
            f"image is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, more than the {max_pixels:,} allowed; "
            "downscale it before sending"
        )
    buffer = np.frombuffer(data, dtype=np.uint8)
    flags = cv2.IMREAD_COLOR if data.startswith(_JPEG) else cv2.IMREAD_UNCHANGED
    try:
        image = cv2.imdecode(buffer, flags)
    except cv2.error as exc:  # OpenCV raises for some malformed headers instead of returning None
        raise ImageError(f"{len(data)} bytes could not be decoded as an image: {exc.msg}") from exc
    if image is None or image.size == 0:
        head = data[:8].hex(" ")
        raise ImageError(
            f"{len(data)} bytes (starting {head}) are not a decodable image; expected JPEG, PNG, WebP or BMP"
        )
    if size is None and image.shape[0] * image.shape[1] > max_pixels:  # formats whose header we do not parse
        raise ImageTooLargeError(
            f"image is {image.shape[1]}x{image.shape[0]} pixels, more than the {max_pixels:,} allowed; downscale it"
        )
    return np.ascontiguousarray(_to_bgr8(image), dtype=np.uint8)


def load_image(path: Path, max_pixels: int = MAX_PIXELS) -> ImageArray:
    """Read and decode an image file; errors name the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"image {path} cannot be read: {exc.strerror}") from exc
    try:
        return decode_image(data, max_pixels)
    except ImageTooLargeError as exc:
        raise ImageTooLargeError(f"image {path}: {exc}") from exc
    except ImageError as exc:
        raise ImageError(f"image {path}: {exc}") from exc
