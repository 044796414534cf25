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
    ``nprobe`` base rows nearest the query (None: scan everything). ``refine``: on a
    store with a refine tier, rescore the best candidates with it (False: the hot
    estimates decide, as without a tier). ``refine_k``: at most this many of each
    query's best rescored candidates may be refined; the hot estimate's error bound
    decides how many are (None: ``DEFAULT_REFINE_K``, at least ``k``).
    """

    k: int = 10
    shortlist: int | None = None
    nprobe: int | None = None
    refine: bool = True
    refine_k: int | None = None

    DEFAULT_SHORTLIST = 200
    DEFAULT_REFINE_K = 100  # measured: docs/refine.md ("In the store")

    @property
    def effective_shortlist(self) -> int:
        if self.shortlist is not None:
            return max(self.shortlist, self.k)
        return max(self.DEFAULT_SHORTLIST, 10 * self.k)

    @property
    def effective_refine_k(self) -> int:
        """The refine pool: ``refine_k`` (default ``DEFAULT_REFINE_K``), at least ``k``,
        at most the shortlist."""
        want = self.DEFAULT_REFINE_K if self.refine_k is None else self.refine_k
        return min(max(want, self.k), self.effective_shortlist)

