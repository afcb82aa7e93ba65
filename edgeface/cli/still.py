"""``edgeface identify|verify|detect|analyze IMG...``: the still-image verbs on local files.

The same code and rules as the MQTT verbs (``edgeface.service.still``), on the device's database,
without a running daemon. ``--json`` prints each image's reply document (one JSON object per image,
in a list); errors for one image (no face, not an image) are reported for that image and make the
exit code non-zero, the other images are still answered.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeface.config import Settings, load_settings
from edgeface.errors import CommandError
from edgeface.service.still import StillImages, open_emotion

StillVerb = Callable[[StillImages, bytes, argparse.Namespace], dict[str, Any]]


def register(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML settings file (database, vision, decision, attributes)")
    common.add_argument("--json", action="store_true", help="print the reply documents as JSON")

    def verb(name: str, help_text: str, run: StillVerb, formatter: Callable[[dict[str, Any]], str]) -> Any:
        p = sub.add_parser(name, help=help_text, parents=[common])
        p.set_defaults(handler=lambda args: _main(args, load_settings(args.config), run, formatter), handler_name=name)
        return p

    p = verb("identify", "who is in these photos (every face, the subject first)", _identify, _format_identify)
    p.add_argument("images", metavar="IMG", type=Path, nargs="+")
    p.add_argument("--top-k", type=int, default=None, help="candidates per face (default decision.top_k)")
    p.add_argument("--threshold", type=float, default=None, help="match threshold for this run")
    p = verb("verify", "is the photo's subject PERSON (or the subject of a second photo)", _verify, _format_verify)
    p.add_argument("images", metavar="IMG", type=Path, nargs="+", help="one photo with --person, else two")
    p.add_argument("--person", metavar="ID", help="person id to verify against")
    p = verb("detect", "face boxes, detector scores, landmarks and quality", _detect, _format_faces)
    p.add_argument("images", metavar="IMG", type=Path, nargs="+")
    p = verb("analyze", "expression (when attributes.enabled), liveness and quality per face", _analyze, _format_faces)
    p.add_argument("images", metavar="IMG", type=Path, nargs="+")


def _identify(still: StillImages, data: bytes, args: argparse.Namespace) -> dict[str, Any]:
    return still.identify(data, top_k=args.top_k, threshold=args.threshold)


def _verify(still: StillImages, data: bytes, args: argparse.Namespace) -> dict[str, Any]:
    other = _read(args.images[1]) if args.person is None else None
    return still.verify(data, person_id=args.person, other=other)


def _detect(still: StillImages, data: bytes, _args: argparse.Namespace) -> dict[str, Any]:
    return still.detect(data)


def _analyze(still: StillImages, data: bytes, _args: argparse.Namespace) -> dict[str, Any]:
    return still.analyze(data)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CommandError("bad_request", f"image {path} cannot be read: {exc.strerror}") from exc


def _main(
    args: argparse.Namespace, settings: Settings, run: StillVerb, formatter: Callable[[dict[str, Any]], str]
) -> int:
    images: list[Path] = args.images
    if args.handler_name == "verify":
        if (args.person is None) != (len(images) == 2) or len(images) > 2:
            raise CommandError("bad_request", "verify takes one photo and --person ID, or two photos")
        images = images[:1]
    # Imported here: loading the models is what the bookkeeping verbs must not pay for.
    from edgeface.liveness.passive import open_passive
    from edgeface.matching.db import FaceDatabase
    from edgeface.matching.enroll import enrollment_vision
    from edgeface.vision.analyzer import FaceAnalyzer

    replies: list[dict[str, Any]] = []
    failed = False
    with FaceAnalyzer.from_config(enrollment_vision(settings.vision)) as analyzer:
        db = FaceDatabase.open(
            settings.db_path, analyzer.model_id, analyzer.embedder.dim, backups=settings.database.backups
        )
        passive = open_passive(settings.liveness, settings.vision)
        still = StillImages.from_config(settings, analyzer, db, None, liveness=passive, emotion=open_emotion(settings))
        for path in images:
            try:
                reply = {"image": str(path), "ok": True, **run(still, _read(path), args)}
            except CommandError as exc:
                failed = True
                error = {"code": exc.code, "message": exc.message}
                reply = {"image": str(path), "ok": False, "error": error, **exc.extra}
            replies.append(reply)
    if args.json:
        print(json.dumps(replies, indent=2, ensure_ascii=False))
    else:
        for reply in replies:
            body = formatter(reply) if reply["ok"] else f"  {reply['error']['code']}: {reply['error']['message']}"
            print(f"{reply['image']}:\n{body}")
    if failed:
        print("edgeface: some images could not be answered", file=sys.stderr)
    return 7 if failed else 0


def _box(face: dict[str, Any]) -> str:
    x, y, w, h = face["bbox"]
    return f"[{x},{y} {w}x{h}]"


def _format_identify(reply: dict[str, Any]) -> str:
    lines = []
    for face in reply["results"]:
        best = face["best_match"]
        who = f"{best['name']} ({best['person_id']}, similarity {best['similarity']:.3f})" if best else "-"
        lines.append(f"  {_box(face)} {face['status']:<9} {face['reason']:<16} {who}")
    lines.append(f"  {reply['faces']} faces in {reply['processing_time_ms']['total']:.0f} ms")
    return "\n".join(lines)


def _format_verify(reply: dict[str, Any]) -> str:
    verdict = "same" if reply["same"] else "different"
    return f"  {verdict}: similarity {reply['similarity']:.3f}, threshold {reply['threshold']:.3f} ({reply['reason']})"


def _format_faces(reply: dict[str, Any]) -> str:
    lines = []
    for face in reply["results"]:
        q = face.get("quality")
        quality = f"{q['face_px']:.0f}px sharp {q['sharpness']:.0f} yaw {q['yaw']}" if q else "no landmarks"
        extra = ""
        if face.get("emotion"):
            extra = f" emotion {face['emotion']['dominant']}"
        if face.get("liveness"):
            extra += f" live {face['liveness']['live']}"
        lines.append(f"  {_box(face)} score {face['score']:.2f} {quality}{extra}")
    lines.append(f"  {reply['faces']} faces")
    return "\n".join(lines)
