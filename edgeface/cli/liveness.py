"""``edgeface liveness IMG...`` (is each face live?) and ``edgeface eval liveness DATASET | --replay VIDEO``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgeface.config import Settings, load_settings
from edgeface.errors import ConfigError

# ``eval`` takes a dataset path as its first argument, which would swallow a ``liveness`` sub-verb:
# ``edgeface eval liveness ...`` is routed here under this name by ``edgeface.cli.main``.
EVAL_VERB = "eval-liveness"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "liveness",
        help="passive liveness of every face in photos: live or a print/screen replay",
        description="Detect the faces of each image and judge each with the passive anti-spoofing model.",
    )
    parser.add_argument("images", nargs="+", type=Path, help="JPEG/PNG/WebP/BMP photos")
    parser.add_argument("--config", type=Path, help="TOML settings (vision and liveness sections)")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    parser.set_defaults(handler=_liveness)

    evaluate = sub.add_parser(
        EVAL_VERB,
        prog="edgeface eval liveness",
        help="(as 'eval liveness') APCER/BPCER of each liveness check on a real/ + fake/ folder",
        description="Attack and bona fide error rates per liveness check and combined, at the configured "
        "thresholds and at the EER. Photos are stills; videos are tracks (see edgeface/tools/eval_liveness.py).",
    )
    evaluate.add_argument("dataset", type=Path, nargs="?", help="folder with real/ and fake/ (any depth)")
    evaluate.add_argument("--replay", type=Path, help="judge one video as a track instead of a dataset")
    evaluate.add_argument("--config", type=Path, help="TOML settings (vision, decision and liveness sections)")
    evaluate.add_argument("--json", type=Path, help="write the full report as JSON here")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(handler=_eval)


def _open(settings: Settings) -> tuple[Any, Any]:
    from edgeface.liveness.passive import PassiveLiveness
    from edgeface.vision.analyzer import FaceAnalyzer

    live = settings.liveness
    passive = PassiveLiveness(
        settings.vision.models_dir, live.passive_models, live.passive_threshold, settings.vision.threads
    )
    return FaceAnalyzer.from_config(settings.vision), passive


def _liveness(args: argparse.Namespace) -> int:
    from edgeface.liveness.fill import detect_fill
    from edgeface.vision.imageio import load_image

    settings = load_settings(args.config)
    analyzer, passive = _open(settings)
    results: list[dict[str, Any]] = []
    try:
        for path in args.images:
            image = load_image(path)
            faces = []
            found = analyzer.locate(image)
            fill = detect_fill(image) if found else None
            for face in found:
                box = face.detection.bbox
                verdict = passive.check(image, box, fill=fill)
                faces.append(
                    {
                        "bbox": box.as_list(),
                        "live": verdict.live,
                        "score": None if verdict.score is None else round(verdict.score, 4),
                        "reason": verdict.reason,
                    }
                )
            results.append({"file": str(path), "faces": faces})
    finally:
        analyzer.close()
    if args.json:
        print(json.dumps({"threshold": passive.threshold, "images": results}, indent=2))
        return 0
    for item in results:
        if not item["faces"]:
            print(f"{item['file']}: no face")
        for face in item["faces"]:
            verdict = {True: "live", False: "SPOOF", None: face["reason"]}[face["live"]]
            print(f"{item['file']}: {verdict} score {face['score']} box {face['bbox']}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from edgeface.tools import eval_liveness as ev

    if (args.dataset is None) == (args.replay is None):
        raise ConfigError("give a DATASET folder or --replay VIDEO (one of them)")
    settings = load_settings(args.config)
    analyzer, passive = _open(settings)
    try:
        evaluator = ev.LivenessEvaluator(settings, analyzer.locate, passive)
        if args.replay is not None:
            tracks = evaluator.track(ev.Sample(args.replay, "real"))
            if not tracks:
                print(f"{args.replay}: no face")
                return 1
            judged = tracks[0]
            for check in judged.live:
                print(f"{check:<9} live={judged.live[check]} best score {judged.scores.get(check, 0.0):.3f}")
            if args.json:
                _write(
                    args.json,
                    {
                        "video": str(args.replay),
                        "mode": settings.liveness.mode,
                        "live": judged.live,
                        "scores": judged.scores,
                    },
                )
            return 0
        samples = ev.load_liveness_set(args.dataset)
        judged_all = ev.evaluate(evaluator, samples, show_progress=not args.quiet)
    finally:
        analyzer.close()
    summary = ev.summarise(judged_all, passive.threshold)
    counts = evaluator.counts
    print(
        f"dataset: {args.dataset} ({len(samples)} files; mode {settings.liveness.mode}, "
        f"passive threshold {passive.threshold})"
    )
    print(ev.format_table(summary))
    print(
        f"not judged: {counts.no_face} without a face, {counts.too_small} faces too small, "
        f"{counts.too_close} against the image's border fill, "
        f"{counts.unreadable} unreadable"
    )
    speed = ev.timing(evaluator.passive_ms)
    if speed is not None:
        print(f"passive check: p50 {speed['p50_ms']:.2f} / p95 {speed['p95_ms']:.2f} ms per face (n={speed['n']})")
    if args.json:
        _write(args.json, ev.report_json(args.dataset, settings, passive, judged_all, counts, evaluator.passive_ms))
    return 0


def _write(path: Path, payload: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(f"wrote {path}")
