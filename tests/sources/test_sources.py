"""Frame sources on real photos and real video files; unplugged devices fail with a useful message."""

from __future__ import annotations

import glob
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface.data import ImageArray
from edgeface.errors import SourceError
from edgeface.sources import FolderSource, FrameSource, OpenCVSource, open_source, redact, resolve_auto


def _drain(source: FrameSource, limit: int = 10_000) -> list[ImageArray]:
    frames = []
    while (image := source.read()) is not None:
        frames.append(image)
        assert len(frames) <= limit, "a finite source never ended"
    return frames


def test_folder_replays_each_photo_for_hold_frames(samples_dir: Path) -> None:
    source = FolderSource(samples_dir, hold_frames=3)
    source.open()
    try:
        assert isinstance(source, FrameSource)
        assert not source.is_live
        assert source.native_fps is not None
        names = [p.name for p in source.files]
        assert names == sorted(names)
        assert {"obama.jpg", "obama2.jpg", "biden.jpg"} <= set(names)
        frames = _drain(source)
    finally:
        source.close()
    assert len(frames) == 3 * len(names)
    # A held photo is the same image, not a copy; a new photo is a different one.
    assert frames[0] is frames[1] is frames[2]
    assert frames[3] is not frames[2]
    for image in frames:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert not image.flags.writeable
    with pytest.raises(SourceError, match="before open"):
        source.read()


def test_folder_hold_in_seconds_uses_its_rate(samples_dir: Path) -> None:
    source = FolderSource(samples_dir / "obama.jpg", hold_s=0.5, fps=10)
    source.open()
    try:
        assert source.hold_frames == 5
        assert len(_drain(source)) == 5
    finally:
        source.close()


def test_open_source_picks_the_implementation(samples_dir: Path, tmp_path: Path) -> None:
    assert isinstance(open_source(str(samples_dir)), FolderSource)
    assert isinstance(open_source(str(samples_dir / "biden.jpg")), FolderSource)
    video = tmp_path / "clip.avi"
    _write_video(video, [_load(samples_dir / "obama.jpg")], 2)
    opened = open_source(str(video))
    assert isinstance(opened, OpenCVSource) and opened.kind == "file" and not opened.is_live
    assert open_source("0").is_live
    assert isinstance(open_source("/dev/video3"), OpenCVSource)
    stream = open_source("rtsp://admin:secret@10.0.0.5:554/stream1")
    assert isinstance(stream, OpenCVSource) and stream.kind == "stream" and stream.is_live
    assert "secret" not in stream.name
    gst = open_source("v4l2src device=/dev/video0 ! videoconvert ! appsink")
    assert isinstance(gst, OpenCVSource) and gst.kind == "gstreamer"


def test_empty_folder_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(SourceError, match=r"holds no images"):
        FolderSource(tmp_path).open()


def test_undecodable_image_is_skipped(samples_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "a_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "b_good.jpg").write_bytes((samples_dir / "obama.jpg").read_bytes())
    source = FolderSource(tmp_path, hold_frames=2)
    source.open()
    try:
        frames = _drain(source)
    finally:
        source.close()
    assert len(frames) == 2


@pytest.mark.parametrize("uri", ["/dev/video99", "99"])
def test_unplugged_camera_is_a_source_error_with_a_hint(uri: str) -> None:
    if Path("/dev/video99").exists():
        pytest.skip("this machine has a /dev/video99")
    source = open_source(uri)
    with pytest.raises(SourceError) as info:
        source.open()
    message = str(info.value)
    assert uri in message
    assert "plugged in" in message
    source.close()  # closing a source that never opened is fine


def test_missing_path_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_source("/nonexistent/clip.mp4")


def test_unreachable_stream_names_the_url_without_password() -> None:
    # Port 9 on loopback: nothing listens, the connection is refused at once.
    source = open_source("rtsp://admin:hunter2@127.0.0.1:9/stream")
    with pytest.raises(SourceError) as info:
        source.open()
    assert "127.0.0.1:9" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_gstreamer_pipeline_without_gstreamer_support_says_so() -> None:
    if "GStreamer:                   YES" in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(SourceError, match="GStreamer"):
        open_source("videotestsrc num-buffers=1 ! appsink").open()


def test_redact_hides_passwords() -> None:
    assert redact("rtsp://u:p@cam.lan:554/x") == "rtsp://u:***@cam.lan:554/x"
    assert redact("rtsp://cam.lan/x") == "rtsp://cam.lan/x"
    assert redact("/dev/video0") == "/dev/video0"


def test_auto_without_camera_replays_the_sample_photos(samples_dir: Path) -> None:
    if glob.glob("/dev/video*"):
        pytest.skip("this machine has a camera node")
    source = resolve_auto()
    assert isinstance(source, FolderSource)
    assert source.path == samples_dir
    assert isinstance(open_source("auto"), FolderSource)


def _load(path: Path) -> ImageArray:
    return np.asarray(cv2.imread(str(path), cv2.IMREAD_COLOR), dtype=np.uint8)


def _write_video(
    path: Path, images: list[ImageArray], repeat: int, fps: float = 10.0, size: tuple[int, int] = (640, 480)
) -> int:
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    count = 0
    for image in images:
        resized = cv2.resize(image, (width, height))
        for _ in range(repeat):
            writer.write(resized)
            count += 1
    writer.release()
    return count


def test_video_file_of_sample_photos(samples_dir: Path, tmp_path: Path) -> None:
    images = [_load(samples_dir / n) for n in ("obama.jpg", "biden.jpg", "obama2.jpg")]
    path = tmp_path / "doorway.avi"
    written = _write_video(path, images, repeat=4, fps=12.0)
    source = open_source(str(path))
    source.open()
    try:
        assert source.native_fps == pytest.approx(12.0)
        frames = _drain(source)
    finally:
        source.close()
    assert len(frames) == written
    assert frames[0].shape == (480, 640, 3)


def test_real_video_clip(shared_data: Path) -> None:
    clip = shared_data / "video" / "short_hamilton_clip.mp4"
    if not clip.is_file():
        pytest.skip("hamilton clip absent")
    source = open_source(str(clip))
    source.open()
    try:
        assert source.native_fps == pytest.approx(29.97, abs=0.01)
        frames = _drain(source)
    finally:
        source.close()
    assert 250 <= len(frames) <= 300  # 9.2 s at 29.97 fps
    assert frames[0].shape == (360, 640, 3)
    # Reopening rewinds to the first frame.
    source.open()
    try:
        first = source.read()
    finally:
        source.close()
    assert first is not None and np.array_equal(first, frames[0])
