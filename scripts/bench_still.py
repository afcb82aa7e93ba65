"""Benchmark the still-image verbs through a real Mosquitto while the camera pipeline runs.

Starts Mosquitto on a free port and the daemon in-process on a paced video replay (the camera), then:
1. runs the pipeline alone for ``--settle`` seconds and counts the frames it dropped;
2. sends ``--requests`` sequential ``identify`` requests for a 640x480 photo with one face, then for
   one with eight faces, then ``analyze`` requests (emotion on) for the eight-face photo, counting
   the pipeline's drops meanwhile;
3. prints p50/p95 of the reply's ``processing_time_ms`` (and of the MQTT round trip), emotion ms per
   face, and frames captured/dropped per phase.

The photos are composed from ../shared/data/dev (one portrait letterboxed to 640x480; eight faces of
eight people tiled 4x2); the replay is ../shared/data/video/short_hamilton_clip.mp4.

    .venv/bin/python scripts/bench_still.py [--requests 100] [--fps 15] [--max-share 0.5] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt

from edgeface.config import load_settings
from edgeface.matching.enroll import enrollment_vision
from edgeface.service.daemon import Daemon
from edgeface.tools.latency import bench_broker
from edgeface.vision.analyzer import FaceAnalyzer

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
DEVICE = "bench-still"
TILE = (160, 240)  # width, height of one face tile in the eight-face photo


def _letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    scale = min(w / image.shape[1], h / image.shape[0])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    out = np.full((h, w, 3), 127, np.uint8)
    y, x = (h - resized.shape[0]) // 2, (w - resized.shape[1]) // 2
    out[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return out


def compose_photos(analyzer: FaceAnalyzer) -> tuple[bytes, bytes]:
    """JPEGs of a 640x480 one-face photo and of a 640x480 photo of eight different people."""
    dev = DATA / "dev"
    one = _letterbox(cv2.imread(str(dev / "barack_obama" / "fr_knn_test_obama1.jpg")), (640, 480))
    people = sorted(p for p in dev.iterdir() if p.is_dir() and not p.name.startswith("_"))
    canvas = np.full((480, 640, 3), 127, np.uint8)
    placed = 0
    for person in people:
        image = cv2.imread(str(sorted(person.iterdir())[0]))
        faces = analyzer.locate(image)
        if image is None or not faces:
            continue
        box = faces[0].detection.bbox
        cx, cy = box.center
        half = max(box.width, box.height)  # the face and as much again around it
        x0, y0 = int(max(0, cx - half * 0.75)), int(max(0, cy - half))
        tile = _letterbox(image[y0 : int(cy + half), x0 : int(cx + half * 0.75)], TILE)
        row, col = divmod(placed, 4)
        trial = canvas.copy()
        trial[row * TILE[1] : (row + 1) * TILE[1], col * TILE[0] : (col + 1) * TILE[0]] = tile
        if len(analyzer.locate(trial)) != placed + 1:
            continue  # this face is not found at tile size: take the next person
        canvas, placed = trial, placed + 1
        if placed == 8:
            break
    found = len(analyzer.locate(canvas))
    if found != 8:
        raise SystemExit(f"the eight-face photo shows {found} faces to the detector; cannot benchmark")
    encode = [cv2.IMWRITE_JPEG_QUALITY, 90]
    return cv2.imencode(".jpg", one, encode)[1].tobytes(), cv2.imencode(".jpg", canvas, encode)[1].tobytes()


class Client:
    """A paho client that sends a command and waits for its reply."""

    def __init__(self, port: int) -> None:
        self.replies: dict[str, dict[str, Any]] = {}
        self.states: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(f"edgeface/{DEVICE}/reply/#", 1), (f"edgeface/{DEVICE}/state", 1)])
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            doc = json.loads(msg.payload)
            if msg.topic.endswith("/state"):
                self.states.append(doc)
            else:
                self.replies[msg.topic.rsplit("/", 1)[1]] = doc
            self._cond.notify_all()

    def request(self, verb: str, payload: dict[str, Any], timeout: float = 120.0) -> tuple[dict[str, Any], float]:
        rid = uuid.uuid4().hex[:16]
        t0 = time.perf_counter()
        self.client.publish(f"edgeface/{DEVICE}/cmd/{verb}", json.dumps({"request_id": rid, **payload}), qos=1)
        with self._cond:
            if not self._cond.wait_for(lambda: rid in self.replies, timeout):
                raise TimeoutError(f"no reply to {verb} within {timeout}s")
            return self.replies.pop(rid), (time.perf_counter() - t0) * 1000.0

    def pipeline(self) -> dict[str, Any]:
        """The pipeline counters of the latest state document (frames captured, drops per queue)."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self.states), 60)
            doc = self.states[-1]
        return {"frames": doc["source"]["frames"], "drops": sum(doc["drops"].values()), "fps": doc["fps"]}

    def fresh_pipeline(self) -> dict[str, Any]:
        with self._cond:
            self.states.clear()
        return self.pipeline()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _pct(values: list[float]) -> dict[str, float]:
    return {"p50": round(float(np.percentile(values, 50)), 1), "p95": round(float(np.percentile(values, 95)), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--fps", type=float, default=15.0, help="camera replay rate")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds of pipeline alone")
    parser.add_argument("--max-share", type=float, default=0.5, help="still.max_share of the daemon (1.0 = no pacing)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with FaceAnalyzer.from_config(enrollment_vision(load_settings(None).vision)) as analyzer:
        one_face, eight_faces = compose_photos(analyzer)
    report: dict[str, Any] = {"requests": args.requests, "camera_fps": args.fps, "max_share": args.max_share}
    with bench_broker("mosquitto") as broker, tempfile.TemporaryDirectory(prefix="bench-still-") as tmp:
        settings = load_settings(
            None,
            device={"id": DEVICE, "state_dir": tmp},
            source={"uri": str(DATA / "video" / "short_hamilton_clip.mp4"), "realtime": True, "loop": True,
                    "fps": args.fps},
            mqtt={"host": broker.host, "port": broker.port},
            service={"reload_on_change": False, "status_interval_s": 1.0},
            attributes={"enabled": True},
            still={"max_share": args.max_share},
        )
        stop = threading.Event()
        thread = threading.Thread(target=Daemon(settings, None, stop).run, name="bench-daemon")
        thread.start()
        client = Client(broker.port)
        try:
            client.pipeline()  # the first state document: the daemon is up and subscribed
            photo = DATA / "dev" / "lin_manuel_miranda"
            enrolled, _ = client.request("enroll", {"name": "Lin-Manuel Miranda", "images": [
                base64.b64encode(sorted(photo.iterdir())[0].read_bytes()).decode()]})
            assert enrolled["ok"], enrolled
            time.sleep(5.0)  # let capture reach its pace before counting
            start = client.fresh_pipeline()
            time.sleep(args.settle)
            alone = client.fresh_pipeline()
            report["pipeline_alone"] = {"seconds": args.settle, "frames": alone["frames"] - start["frames"],
                                        "dropped": alone["drops"] - start["drops"], "fps": alone["fps"]}
            phases = [("identify_1_face", "identify", one_face, 1), ("identify_8_faces", "identify", eight_faces, 8),
                      ("analyze_8_faces", "analyze", eight_faces, 8)]
            for name, verb, image, faces in phases:
                payload = {"image": base64.b64encode(image).decode()}
                before, t0 = client.fresh_pipeline(), time.monotonic()
                processing, round_trip, emotion = [], [], []
                for _ in range(args.requests):
                    reply, rtt = client.request(verb, payload)
                    assert reply["ok"] and reply["faces"] == faces, reply
                    processing.append(reply["processing_time_ms"]["total"])
                    round_trip.append(rtt)
                    if "emotion" in reply["processing_time_ms"]:
                        emotion.append(reply["processing_time_ms"]["emotion"] / faces)
                seconds = time.monotonic() - t0
                after = client.fresh_pipeline()
                report[name] = {
                    "processing_time_ms": _pct(processing), "round_trip_ms": _pct(round_trip),
                    "seconds": round(seconds, 1), "pipeline_frames": after["frames"] - before["frames"],
                    "pipeline_dropped": after["drops"] - before["drops"], "pipeline_fps": after["fps"],
                    **({"emotion_ms_per_face": _pct(emotion)} if emotion else {}),
                }
                print(name, json.dumps(report[name]), flush=True)
        finally:
            client.close()
            stop.set()
            thread.join(60)
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
