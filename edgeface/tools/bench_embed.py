"""``edgeface bench embed``: milliseconds per face of each manifest embedder, and of dlib's descriptor.

Every embedder runs on real aligned chips of the sample photos (aligned with its own template), one
face per call (what the pipeline does for a single person at the door), for each thread count. The
dlib reference is timed on the same photos in the same process, so the ratio holds on any machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from edgeface.config import VisionConfig
from edgeface.data import ImageArray
from edgeface.errors import ModelError
from edgeface.tools import metrics, reference
from edgeface.tools.encoders import embedder_ids
from edgeface.tools.progress import Progress

# Untimed calls first: LiteRT allocates and XNNPACK packs weights on the first invocations.
WARMUP = 3


@dataclass(frozen=True, slots=True)
class EmbedTiming:
    model_id: str
    threads: int | None  # None: not settable (dlib)
    faces: int
    ms: metrics.LatencySummary
    quantization: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "model_id": self.model_id,
            "threads": self.threads,
            "faces": self.faces,
            "quantization": self.quantization,
            "ms_per_face": self.ms.as_dict(),
        }


def _time_calls(calls: Sequence[Callable[[], object]], repeats: int, progress: Progress) -> metrics.LatencySummary:
    for call in calls[:WARMUP]:
        call()
    samples = []
    for r in range(repeats):
        for call in calls:
            start = time.perf_counter()
            call()
            samples.append((time.perf_counter() - start) * 1000.0)
        progress.update(r + 1)
    progress.close(repeats)
    return metrics.latency_summary(samples)


def _edgeface_chips(vision: VisionConfig, model_id: str, images: Sequence[ImageArray]) -> list[ImageArray]:
    from edgeface.vision.analyzer import FaceAnalyzer

    analyzer = FaceAnalyzer.from_config(vision.model_copy(update={"embedder": model_id}))
    return [face.chip for image in images for face in analyzer.analyze(image)]


def bench_embed(
    vision: VisionConfig,
    images: Sequence[ImageArray],
    *,
    threads: Sequence[int] = (1, 2),
    repeats: int = 20,
    with_reference: bool = True,
    show_progress: bool = True,
) -> list[EmbedTiming]:
    """Time every manifest embedder at each thread count, then dlib's descriptor when installed."""
    from edgeface.vision.fused import create_embedder
    from edgeface.vision.manifest import load_manifest

    manifest = load_manifest(vision.models_dir)
    out = []
    for model_id in embedder_ids(vision.models_dir):
        chips = _edgeface_chips(vision, model_id, images)
        if not chips:
            raise ModelError(f"bench embed: {model_id} found no face in the {len(images)} photos")
        for n in threads:
            embedder = create_embedder(vision.models_dir, model_id, n)
            calls = [partial(embedder.embed, [chip]) for chip in chips]
            progress = Progress(f"embed {model_id} x{n}", repeats, enabled=show_progress)
            summary = _time_calls(calls, repeats, progress)
            out.append(EmbedTiming(model_id, n, len(chips), summary, manifest.embedder(model_id).quantization))
    if with_reference and reference.available():
        out.append(_bench_reference(images, repeats, show_progress))
    return out


def _bench_reference(images: Sequence[ImageArray], repeats: int, show_progress: bool) -> EmbedTiming:
    pipeline = reference.ReferencePipeline()
    calls: list[Callable[[], object]] = []
    for image in images:
        rgb = pipeline.to_rgb(image)
        shapes = pipeline.shapes(rgb, pipeline.locate(rgb))
        calls += [partial(pipeline.describe, rgb, [shape]) for shape in shapes]
    if not calls:
        raise ModelError(f"bench embed: the dlib reference found no face in the {len(images)} photos")
    progress = Progress(f"embed {reference.REFERENCE_ID}", repeats, enabled=show_progress)
    return EmbedTiming(reference.REFERENCE_ID, None, len(calls), _time_calls(calls, repeats, progress), "float32")


def format_table(timings: Sequence[EmbedTiming]) -> str:
    """One row per (model, threads) with the speed-up over dlib when it was measured."""
    dlib_ms = next((t.ms.p50 for t in timings if t.model_id == reference.REFERENCE_ID), None)
    header = f"{'embedder':<24} {'threads':>7} {'faces':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'vs dlib':>8}"
    lines = [header, "-" * len(header)]
    for t in timings:
        ratio = f"{dlib_ms / t.ms.p50:7.2f}x" if dlib_ms and t.ms.p50 > 0 else f"{'-':>8}"
        threads = "-" if t.threads is None else str(t.threads)
        lines.append(
            f"{t.model_id:<24} {threads:>7} {t.faces:>5} {t.ms.p50:8.2f} {t.ms.p95:8.2f} {t.ms.max:8.2f} {ratio}"
        )
    return "\n".join(lines)


def sample_images(folder: Path, names: Sequence[str]) -> list[ImageArray]:
    """Decode the named photos of ``folder``."""
    from edgeface.vision.imageio import load_image

    return [load_image(folder / name) for name in names]
