"""``edgeface bench [match|embed]`` and ``edgeface eval``: speed and accuracy measurements.

Tables go to stdout, progress bars to stderr; ``--json`` writes the full numbers for later diffing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgeface.config import Settings, load_settings
from edgeface.errors import ConfigError

DEFAULT_IDENTITIES = "1000,10000,100000"
SAMPLE_PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")


def _csv_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _far(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a false accept rate such as 1e-3, got {text!r}") from exc
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"a target false accept rate is between 0 and 1 (exclusive), got {text!r}")
    return value


def _csv_names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def register(sub: Any) -> None:
    _register_eval(sub)
    bench = sub.add_parser(
        "bench",
        help="measure speed: the whole pipeline (default), 'match' or 'embed'",
        description="Run the real pipeline as fast as possible on a source and report fps, per-stage "
        "latency, capture->MQTT latency, memory and CPU; or benchmark matching or embedding alone.",
    )
    bench.add_argument("--config", type=Path, help="TOML settings (vision, decision, tracker, pipeline sections)")
    bench.add_argument("--source", help="video file, image folder, camera or stream (default: the sample photos)")
    bench.add_argument("--frames", type=int, help="stop after this many frames (default: the whole file; 300 live)")
    bench.add_argument("--threads", type=int, help="interpreter threads per model (default: vision.threads)")
    bench.add_argument("--width", type=int, default=640, help="resize frames to this width (default 640)")
    bench.add_argument("--gallery", type=Path, help="folder per person to enrol before the run")
    bench.add_argument("--compare", choices=["face_recognition"], help="also run the dlib reference on the same frames")
    bench.add_argument(
        "--broker", default="auto", help="HOST:PORT of a broker, 'embedded', 'mosquitto' or 'auto' (default)"
    )
    bench.add_argument(
        "--realtime", action="store_true", help="pace a file at its native rate with live (dropping) queues"
    )
    bench.add_argument("--loop", action="store_true", help="replay a file from its start until --frames are done")
    bench.add_argument("--json", type=Path, help="write the full report as JSON here")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(handler=_bench_pipeline)
    actions = bench.add_subparsers(dest="bench_verb", metavar="[match|embed]")

    match = actions.add_parser("match", help="top-k search time against synthetic databases of N identities")
    match.add_argument("--identities", type=_csv_ints, default=_csv_ints(DEFAULT_IDENTITIES))
    match.add_argument("--samples-per-person", type=int, default=1)
    match.add_argument("--top-k", type=int, default=5)
    match.add_argument("--repeats", type=int, default=200, help="timed searches per database size")
    match.add_argument("--json", type=Path, help="write the results as JSON here")
    match.set_defaults(handler=_bench_match)

    embed = actions.add_parser("embed", help="ms per face of each embedder (and dlib) on real aligned chips")
    embed.add_argument("--config", type=Path, help="TOML settings (vision section)")
    embed.add_argument("--threads", type=_csv_ints, default=[1, 2], help="thread counts to try (default 1,2)")
    embed.add_argument("--repeats", type=int, default=20, help="timed passes over the chips")
    embed.add_argument("--photos", type=Path, help="folder of photos to take chips from (default: the samples)")
    embed.add_argument("--no-reference", action="store_true", help="skip dlib even when installed")
    embed.add_argument("--json", type=Path, help="write the results as JSON here")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    embed.set_defaults(handler=_bench_embed)


def _register_eval(sub: Any) -> None:
    parser = sub.add_parser(
        "eval",
        help="verification / identification accuracy on a labelled set",
        description="Encode a labelled set with each model and report faces found, accuracy at the "
        "model's threshold, the best threshold, TAR at FAR 1e-2/1e-3/1e-4, EER, (folder sets) rank-1 and, "
        "when the pairs have a fold column, k-fold accuracy (each fold at the best threshold of the others).",
    )
    parser.add_argument(
        "dataset",
        type=Path,
        nargs="+",
        help="a pairs.csv (file_a,file_b,same[,fold]), several merged into one set, or a folder per person",
    )
    parser.add_argument("--config", type=Path, help="TOML settings (vision section)")
    parser.add_argument(
        "--models",
        type=_csv_names,
        help="comma-separated embedder ids and/or 'dlib' (default: every embedder, and dlib when installed)",
    )
    parser.add_argument("--threads", type=int, help="interpreter threads per model (default: vision.threads)")
    parser.add_argument(
        "--target-far",
        type=_far,
        action="append",
        default=[],
        help="print the threshold reaching this false accept rate (repeatable), e.g. 1e-3",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="derive match/unknown thresholds and margin for a door (FAR 1e-3) from every pair of the set's photos",
    )
    parser.add_argument(
        "--face-px",
        type=int,
        help="shrink every image so that its largest face is this many pixels (the size decision.min_face_px "
        "gates on) before encoding: accuracy on faces that small; images with smaller faces are kept as they are",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        help="keep each image's vector in this folder and reuse it while the pipeline is unchanged",
    )
    parser.add_argument("--json", type=Path, help="write the full report as JSON here")
    parser.add_argument("--plot", type=Path, help="draw the ROC curves into this PNG (needs matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_eval)


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    threads = getattr(args, "threads", None)
    if isinstance(threads, int):
        if not 1 <= threads <= 8:
            raise ConfigError(f"--threads must be 1..8, got {threads}")
        settings = settings.model_copy(update={"vision": settings.vision.model_copy(update={"threads": threads})})
    return settings


def _write_json(path: Path, payload: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(f"wrote {path}")


def _eval(args: argparse.Namespace) -> int:
    from edgeface.tools import eval as evaluation
    from edgeface.tools.dataset import PairSet, load_dataset
    from edgeface.tools.encoders import create_encoders, default_models

    vision = _settings(args).vision
    dataset = load_dataset(*args.dataset)
    model_ids = args.models or default_models(vision.models_dir)
    if args.face_px is not None and not 8 <= args.face_px <= 2000:
        raise ConfigError(f"--face-px must be 8..2000 pixels, got {args.face_px}")
    encoders = create_encoders(vision, model_ids, face_px=args.face_px)
    reports = [
        evaluation.evaluate(
            e,
            dataset,
            show_progress=not args.quiet,
            cache_dir=args.cache,
            target_fars=args.target_far,
            calibration=args.calibrate,
        )
        for e in encoders
    ]
    kind = "pairs" if isinstance(dataset, PairSet) else "folder per person"
    names = " + ".join(map(str, dataset.sources)) if isinstance(dataset, PairSet) else str(dataset.source)
    print(f"dataset: {names} ({kind}, {len(dataset.images)} images)")
    print(evaluation.format_table(reports))
    if args.json:
        _write_json(args.json, evaluation.report_json(reports, dataset))
    if args.plot:
        if evaluation.plot_roc(reports, args.plot, f"ROC: {dataset.source.name}"):
            print(f"wrote {args.plot}")
        else:
            print("edgeface: matplotlib is not installed; no ROC plot drawn", file=sys.stderr)
    return 0


def _bench_embed(args: argparse.Namespace) -> int:
    from edgeface.samples import ensure_samples
    from edgeface.sources.uri import IMAGE_SUFFIXES
    from edgeface.tools.bench_embed import bench_embed, format_table, sample_images

    vision = load_settings(args.config).vision
    if args.photos:
        names = sorted(p.name for p in args.photos.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        images = sample_images(args.photos, names)
    else:
        images = sample_images(ensure_samples(), SAMPLE_PHOTOS)
    timings = bench_embed(
        vision,
        images,
        threads=args.threads,
        repeats=args.repeats,
        with_reference=not args.no_reference,
        show_progress=not args.quiet,
    )
    print(format_table(timings))
    if args.json:
        _write_json(args.json, {"embedders": [t.as_dict() for t in timings]})
    return 0


def _bench_match(args: argparse.Namespace) -> int:
    from edgeface.tools.bench_match import bench_match

    rows = bench_match(
        args.identities, samples_per_person=args.samples_per_person, top_k=args.top_k, repeats=args.repeats
    )
    print(_dict_table(rows))
    if args.json:
        _write_json(args.json, {"match": rows})
    return 0


def _dict_table(rows: list[dict[str, Any]]) -> str:
    """A plain table of uniform dicts (bench_match's rows), numbers right-aligned."""
    if not rows:
        return "(no results)"
    keys = list(rows[0])
    cells = [[_cell(row.get(k)) for k in keys] for row in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths, strict=True))]
    lines.append("-" * len(lines[0]))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _bench_pipeline(args: argparse.Namespace) -> int:
    from edgeface.service.memory import tune_malloc
    from edgeface.tools.bench import BenchOptions, format_report, run_bench

    tune_malloc()  # as ``edgeface run`` does, before the stage threads: the RSS figure is the daemon's
    settings = _settings(args)
    if args.frames is not None and args.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.frames}")
    if args.loop and args.frames is None:
        raise ConfigError("--loop needs --frames (a looping replay never ends by itself)")
    options = BenchOptions(
        source=args.source,
        frames=args.frames,
        width=args.width,
        gallery=args.gallery,
        compare=args.compare is not None,
        broker=args.broker,
        realtime=args.realtime,
        loop=args.loop,
        show_progress=not args.quiet,
    )
    report = run_bench(settings, options)
    print(format_report(report))
    if args.json:
        _write_json(args.json, report)
    return 0
