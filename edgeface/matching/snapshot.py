"""An immutable, match-ready view of one database generation.

The database builds a new snapshot after every write or reload and swaps the reference; a matcher
holding the previous snapshot keeps using it undisturbed, so a reload can never tear a match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from edgeface.data import FloatArray
from edgeface.matching.records import PersonRecord

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
StrArray = npt.NDArray[np.str_]


_A = TypeVar("_A", bound=npt.NDArray[Any])


def _frozen(array: _A) -> _A:
    array.flags.writeable = False
    return array


@dataclass(frozen=True, slots=True, eq=False)
class DbSnapshot:
    """Rows are positives grouped by person (in creation order), then negatives grouped by person.

    Every person has at least one positive sample (the database enforces it), so person ``i``'s
    positives are rows ``group_starts[i]`` up to the next start (or ``n_positive``).
    """

    generation: int
    model_id: str
    dim: int
    # (N, D) float32, L2-normalised. Stored as the transpose of a C-contiguous (D, N) array: the
    # matcher computes ``queries @ matrix.T`` and BLAS streams a contiguous (D, N) operand ~1.6x
    # faster than a row-major (N, D) one at 100k rows (measured by edgeface.tools.bench_match).
    matrix: FloatArray
    row_person: IntArray  # (N,) index into person_ids
    positive: BoolArray  # (N,)
    n_positive: int
    person_ids: StrArray  # (P,)
    person_names: StrArray  # (P,)
    group_starts: IntArray  # (P,) first positive row of each person
    # Person-aligned row offsets splitting the positives into ~sqrt(P) blocks; each block holds
    # whole persons, which lets the matcher bound the k-th best person score cheaply (matcher.py).
    block_starts: IntArray

    @property
    def negative(self) -> BoolArray:
        return ~self.positive

    @property
    def persons(self) -> int:
        return int(self.person_ids.shape[0])

    @classmethod
    def build(
        cls, *, generation: int, model_id: str, dim: int, people: tuple[PersonRecord, ...], matrix: FloatArray
    ) -> DbSnapshot:
        """Index ``matrix`` whose rows follow ``people`` and their samples in order."""
        kinds = [s.kind == "positive" for p in people for s in p.samples]
        counts = np.array([len(p.samples) for p in people], dtype=np.int64)
        positives = np.array([p.positives for p in people], dtype=np.int64)
        if positives.size and int(positives.min()) < 1:
            raise ValueError("every person needs at least one positive sample")
        is_positive = np.array(kinds, dtype=np.bool_)
        person_of_row = np.repeat(np.arange(len(people), dtype=np.int64), counts)
        # Rows already follow person order, so a stable sort on kind alone groups each person's positives.
        order = np.argsort(~is_positive, kind="stable")
        transposed = np.ascontiguousarray(matrix.reshape(-1, dim)[order].T, dtype=np.float32)
        group_starts = np.concatenate(([0], np.cumsum(positives)[:-1])).astype(np.int64) if people else positives
        step = max(1, math.isqrt(len(people)))
        return cls(
            generation=generation,
            model_id=model_id,
            dim=dim,
            matrix=_frozen(transposed).T,
            row_person=_frozen(person_of_row[order]),
            positive=_frozen(is_positive[order]),
            n_positive=int(positives.sum()),
            person_ids=_frozen(np.array([p.id for p in people], dtype=np.str_)),
            person_names=_frozen(np.array([p.name for p in people], dtype=np.str_)),
            group_starts=_frozen(group_starts),
            block_starts=_frozen(group_starts[::step].copy()),
        )
