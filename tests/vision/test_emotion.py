"""The emotion classifier: the shipped TFLite through our runtime against the Keras original's probabilities.

``models/fer_emotion_reference.json`` was written by the model build (scripts/emotion_model.py) with
TensorFlow: fer's own crops of the registry sample faces and the Keras model's softmax on each.
Here the runtime path (manifest normalisation, LiteRT) must reproduce them, without TensorFlow.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from edgeface.data import BBox
from edgeface.errors import ModelError
from edgeface.vision.emotion import EmotionClassifier, face_crop

MODELS = Path(__file__).resolve().parents[2] / "models"
REFERENCE = MODELS / "fer_emotion_reference.json"


@pytest.fixture(scope="module")
def classifier() -> EmotionClassifier:
    return EmotionClassifier(MODELS, "fer_mini_xception")


def test_runtime_reproduces_the_keras_probabilities_on_real_faces(classifier: EmotionClassifier) -> None:
    reference = json.loads(REFERENCE.read_text())
    assert tuple(reference["classes"]) == classifier.classes
    crops = [np.frombuffer(base64.b64decode(c["grey64_b64"]), np.uint8).reshape(64, 64) for c in reference["crops"]]
    keras = np.array([c["keras"] for c in reference["crops"]], dtype=np.float32)
    ours = classifier.probabilities(crops)
    assert len(crops) >= 16
    assert np.abs(ours - keras).max() <= reference["max_probability_diff"]
    assert (ours.argmax(axis=1) == keras.argmax(axis=1)).all()
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-5)


def test_classify_a_face_box_of_a_photo(classifier: EmotionClassifier, face_image) -> None:  # type: ignore[no-untyped-def]
    image = face_image("obama.jpg")
    h, w = image.shape[:2]
    (emotion,) = classifier.classify(image, [BBox(w * 0.3, h * 0.2, w * 0.7, h * 0.6)])
    assert list(emotion.probabilities) == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert sum(emotion.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert emotion.dominant == max(emotion.probabilities, key=emotion.probabilities.__getitem__)


def test_crop_at_the_image_edge_is_square_and_padded(face_image) -> None:  # type: ignore[no-untyped-def]
    image = face_image("obama.jpg")
    crop = face_crop(image, BBox(-20.0, -10.0, 80.0, 70.0))
    assert crop.shape == (120, 120)  # 100 px box + 10 % per side, filled where it leaves the image


def test_a_non_attributes_model_is_refused() -> None:
    with pytest.raises(ModelError, match="not an attributes classifier"):
        EmotionClassifier(MODELS, "blazeface_short")
