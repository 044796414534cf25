"""Public value types returned by the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np

ExternalId = Union[int, str]


@dataclass(frozen=True)
class Hit:
    """One search result. ``score``: similarity for cosine/ip (higher is better), squared
    L2 distance for l2 (lower is better); always computed from the dequantized vector."""

    id: ExternalId
    score: float
    payload: dict | None = None


@dataclass(frozen=True)
class Record:
    """What ``Store.get`` returns: the dequantized vector and the payload of one id."""

    id: ExternalId
    vector: np.ndarray = field(repr=False)
    payload: dict | None = None


@dataclass(frozen=True)
class SearchOptions:
    """Knobs of one search; see docs/design.md ("The search pipeline").

    ``shortlist``: how many candidates the Hamming pass keeps for exact rescoring
    (None: ``max(DEFAULT_SHORTLIST, 10 * k)``). ``nprobe``: scan only the rows of the
    ``nprobe`` base rows nearest the query (None: scan everything).
    """

    k: int = 10
    shortlist: int | None = None
    nprobe: int | None = None

    DEFAULT_SHORTLIST = 200

    @property
    def effective_shortlist(self) -> int:
        if self.shortlist is not None:
            return max(self.shortlist, self.k)
        return max(self.DEFAULT_SHORTLIST, 10 * self.k)

