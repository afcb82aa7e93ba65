"""The whole chain through FaceAnalyzer: behaviour on real photos, and verification accuracy on the dev pairs.

The accuracy test compares our path (BlazeFace -> FaceMesh -> 5-point chip -> TFLite ResNet, cosine)
with the face_recognition reference (dlib HOG upsampling once -> 5-point -> dlib ResNet, Euclidean
0.6) on ``../shared/data/dev/pairs.csv``. dlib's HOG takes ~35 s on those photos, so its descriptors
are cached in pytest's cache, keyed by each photo's sha256 and the dlib version.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgeface.config import VisionConfig
from edgeface.data import Face
from edgeface.errors import ImageError, ModelError
from edgeface.tools import metrics
from edgeface.vision.align import Aligner
from edgeface.vision.analyzer import AnalyzedFace, FaceAnalyzer
from edgeface.vision.imageio import load_image
from edgeface.vision.manifest import load_manifest

from .support import FLOAT, INT8, PARTIAL, ImageLoader

# face_recognition's own decision rule for its descriptors.
DLIB_TOLERANCE = 0.6
TARGET_FAR = 1e-2
_CACHE_KEY = "edgeface/vision/dlib_reference_descriptors"


# --- FaceAnalyzer on single photos -----------------------------------------------------------


def test_portrait_gives_one_complete_face(analyzer: FaceAnalyzer, face_image: ImageLoader) -> None:
    (face,) = analyzer.analyze(face_image("obama.jpg"))
    assert isinstance(face, AnalyzedFace) and face.face.landmarks is not None
    assert face.chip.shape == (150, 150, 3) and face.chip.dtype == np.uint8
    vector = face.embedding.vector
    assert vector.shape == (128,) and vector.dtype == np.float32
    assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-5)
    assert face.embedding.model_id == INT8 == analyzer.model_id
    assert face.embedding.quality.face_px > 200 and face.embedding.quality.sharpness > 100


def test_faceless_images_give_nothing(analyzer: FaceAnalyzer, flat_image: np.ndarray) -> None:
    assert analyzer.analyze(flat_image) == []
    assert analyzer.locate(flat_image) == []


def test_dogs_give_nothing(analyzer: FaceAnalyzer, shared_data: Path) -> None:
    assert analyzer.analyze(load_image(shared_data / "dev" / "_negatives" / "dlib_dogs.jpg")) == []


@pytest.mark.parametrize("name", PARTIAL)
def test_partial_faces_give_typed_results(analyzer: FaceAnalyzer, face_image: ImageLoader, name: str) -> None:
    faces = analyzer.analyze(face_image(name))
    assert len(faces) == 1 and isinstance(faces[0], AnalyzedFace)
    (whole,) = analyzer.analyze(face_image("obama.jpg"))
    assert float(faces[0].embedding.vector @ whole.embedding.vector) > analyzer.embedder.default_threshold


def test_rgba_file_is_analyzed_like_any_photo(analyzer: FaceAnalyzer, samples_dir: Path) -> None:
    (face,) = analyzer.analyze(load_image(samples_dir / "32bit.png"))
    (twin,) = analyzer.analyze(load_image(samples_dir / "obama2.jpg"))  # the same photo as a JPEG
    assert float(face.embedding.vector @ twin.embedding.vector) > 0.99


def test_two_people_come_largest_first_and_stay_apart(
    analyzer: FaceAnalyzer, face_image: ImageLoader, two_faces: np.ndarray
) -> None:
    obama, biden = analyzer.analyze(two_faces)
    assert obama.face.detection.bbox.width > biden.face.detection.bbox.width
    (ref_obama,) = analyzer.analyze(face_image("obama.jpg"))
    (ref_biden,) = analyzer.analyze(face_image("biden.jpg"))
    threshold = analyzer.embedder.default_threshold
    assert float(obama.embedding.vector @ ref_obama.embedding.vector) > threshold
    assert float(biden.embedding.vector @ ref_biden.embedding.vector) > threshold
    assert float(obama.embedding.vector @ biden.embedding.vector) < threshold


def test_live_steps_give_what_analyze_gives(analyzer: FaceAnalyzer, two_faces: np.ndarray) -> None:
    faces = analyzer.locate(two_faces)
    assert all(isinstance(f, Face) for f in faces)
    # A face whose landmarks were rejected is aligned on its keypoints; all keep their order.
    with_reject = [Face(faces[0].detection, None), *faces]
    aligned = analyzer.align(two_faces, with_reject)
    assert [a.face for a in aligned] == with_reject
    assert [a.quality.aligned_by for a in aligned] == ["keypoints", "landmarks", "landmarks"]
    fallback, *aligned = aligned
    embeddings = analyzer.embed(aligned)
    assert analyzer.embed([]) == []
    # The keypoint chip of the largest face still describes that person.
    (fallback_embedding,) = analyzer.embed([fallback])
    assert float(fallback_embedding.vector @ embeddings[0].vector) > analyzer.embedder.default_threshold
    whole = {f.face.detection.bbox: f for f in analyzer.analyze(two_faces)}
    for a, e in zip(aligned, embeddings, strict=True):
        np.testing.assert_array_equal(e.vector, whole[a.face.detection.bbox].embedding.vector)
        assert e.quality == a.quality


def test_without_the_keypoint_fallback_a_rejected_face_is_skipped(
    analyzer: FaceAnalyzer, two_faces: np.ndarray
) -> None:
    strict = FaceAnalyzer(
        analyzer.detector,
        analyzer.landmarker,
        Aligner(analyzer.aligner.template, analyzer.aligner.size, keypoint_fallback=False),
        analyzer.embedder,
    )
    faces = strict.locate(two_faces)
    aligned = strict.align(two_faces, [Face(faces[0].detection, None), *faces])
    assert [a.face for a in aligned] == faces


def test_non_bgr_input_is_an_image_error(analyzer: FaceAnalyzer, face_image: ImageLoader) -> None:
    with pytest.raises(ImageError):
        analyzer.analyze(face_image("obama.jpg")[..., :2])


def test_unknown_embedder_is_a_model_error(models_dir: Path) -> None:
    with pytest.raises(ModelError, match="no model 'facenet'"):
        FaceAnalyzer.from_config(VisionConfig(models_dir=models_dir, embedder="facenet"))


@pytest.mark.oracle
def test_mediapipe_backend_gives_the_same_identity(
    models_dir: Path, analyzer: FaceAnalyzer, face_image: ImageLoader
) -> None:
    pytest.importorskip("mediapipe")
    with FaceAnalyzer.from_config(VisionConfig(models_dir=models_dir, backend="mediapipe", embedder=INT8)) as mp:
        for name in ("obama.jpg", "biden.jpg"):
            (theirs,) = mp.analyze(face_image(name))
            (ours,) = analyzer.analyze(face_image(name))
            assert float(theirs.embedding.vector @ ours.embedding.vector) > 0.98


# --- verification on the dev pairs -----------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One pipeline's verification numbers on the dev pairs."""

    name: str
    accuracy_at_default: float
    best: metrics.OperatingPoint
    tar_at_far: metrics.OperatingPoint
    missing: int


@pytest.fixture(scope="session")
def dev_pairs(shared_data: Path) -> list[tuple[str, str, bool]]:
    with (shared_data / "dev" / "pairs.csv").open(newline="") as fh:
        return [(row["file_a"], row["file_b"], row["same"] == "1") for row in csv.DictReader(fh)]


@pytest.fixture(scope="session")
def dev_images(shared_data: Path, dev_pairs: list[tuple[str, str, bool]]) -> dict[str, Path]:
    names = sorted({a for a, _, _ in dev_pairs} | {b for _, b, _ in dev_pairs})
    return {name: shared_data / "dev" / name for name in names}


def _largest(faces: list[AnalyzedFace]) -> np.ndarray | None:
    # The subject of a portrait: analyze() orders it first (vision.subject).
    return faces[0].embedding.vector if faces else None


@pytest.fixture(scope="session")
def ours(models_dir: Path, dev_images: dict[str, Path]) -> dict[tuple[str, str], dict[str, np.ndarray | None]]:
    """Descriptors of every dev photo's largest face, per (detector range, embedder)."""
    images = {name: load_image(path) for name, path in dev_images.items()}
    out: dict[tuple[str, str], dict[str, np.ndarray | None]] = {}
    for rng, model_id in (("short", INT8), ("short", FLOAT), ("full", INT8)):
        config = VisionConfig(models_dir=models_dir, detector=rng, embedder=model_id)  # type: ignore[arg-type]
        with FaceAnalyzer.from_config(config) as analyzer:
            out[rng, model_id] = {name: _largest(analyzer.analyze(image)) for name, image in images.items()}
    return out


@pytest.fixture(scope="session")
def dlib_reference(
    request: pytest.FixtureRequest, dev_images: dict[str, Path]
) -> Iterator[dict[str, np.ndarray | None]]:
    """face_recognition's descriptor of every dev photo's largest face (cached across runs)."""
    dlib = pytest.importorskip("dlib")
    from edgeface.tools import reference

    if not reference.available():
        pytest.skip("the dlib reference pipeline is not installed (extra 'reference')")
    key = f"{_CACHE_KEY}/{dlib.__version__}/upsample{reference.UPSAMPLE}"
    cached: dict[str, list[float] | None] = request.config.cache.get(key, {})
    out: dict[str, np.ndarray | None] = {}
    pipeline: reference.ReferencePipeline | None = None
    for name, path in dev_images.items():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in cached:
            pipeline = pipeline or reference.ReferencePipeline()
            faces = sorted(pipeline.analyze(load_image(path)), key=lambda f: -f.bbox.width * f.bbox.height)
            cached[digest] = faces[0].descriptor.astype(float).tolist() if faces else None
        vector = cached[digest]
        out[name] = None if vector is None else np.asarray(vector, dtype=np.float32)
    request.config.cache.set(key, cached)
    yield out


def _evaluate(
    name: str,
    vectors: dict[str, np.ndarray | None],
    pairs: list[tuple[str, str, bool]],
    *,
    cosine: bool,
    default: float,
) -> Result:
    scores = []
    for a, b, _ in pairs:
        va, vb = vectors[a], vectors[b]
        if va is None or vb is None:
            scores.append(-np.inf)  # no face: a false reject of a genuine pair, a correct reject otherwise
        elif cosine:
            scores.append(float(va @ vb))
        else:
            scores.append(-float(np.linalg.norm(va - vb)))
    labels = [same for _, _, same in pairs]
    curve = metrics.roc(scores, labels)
    missing = sum(v is None for v in vectors.values())
    return Result(
        name,
        metrics.accuracy_at(scores, labels, default),
        metrics.best_accuracy(curve),
        metrics.tar_at_far(curve, TARGET_FAR),
        missing,
    )


def test_our_path_verifies_at_least_as_well_as_dlib(
    ours: dict[tuple[str, str], dict[str, np.ndarray | None]],
    dlib_reference: dict[str, np.ndarray | None],
    dev_pairs: list[tuple[str, str, bool]],
    models_dir: Path,
    record_property: pytest.RecordProperty,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = load_manifest(models_dir)
    results = [
        _evaluate(
            f"{rng}/{model_id}",
            vectors,
            dev_pairs,
            cosine=True,
            default=float(manifest.get(model_id).default_threshold or 0),
        )
        for (rng, model_id), vectors in ours.items()
    ]
    dlib = _evaluate("dlib reference", dlib_reference, dev_pairs, cosine=False, default=-DLIB_TOLERANCE)
    with capsys.disabled():
        print(f"\ndev pairs: {len(dev_pairs)} (TAR at FAR <= {TARGET_FAR:g}; dlib thresholds are minus the distance)")
        for r in [*results, dlib]:
            print(
                f"  {r.name:32s} acc@default {r.accuracy_at_default:.4f}  "
                f"best acc {r.best.value:.4f} @ {r.best.threshold:+.4f}  "
                f"TAR {r.tar_at_far.value:.4f} @ {r.tar_at_far.threshold:+.4f}  no face: {r.missing}"
            )
    for r in [*results, dlib]:
        record_property(f"{r.name} best_accuracy", r.best.value)
        record_property(f"{r.name} best_threshold", r.best.threshold)
        record_property(f"{r.name} tar_at_far_1e-2", r.tar_at_far.value)
    default_int8 = next(r for r in results if r.name == f"short/{INT8}")  # VisionConfig's defaults
    assert default_int8.missing == 0
    assert default_int8.accuracy_at_default >= dlib.accuracy_at_default
    assert default_int8.best.value >= dlib.best.value
    assert default_int8.tar_at_far.value >= dlib.tar_at_far.value
