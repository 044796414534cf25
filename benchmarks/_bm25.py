"""A small, dependency-free BM25 (Okapi, Lucene's idf): the first stage of the rerank
pipeline benchmark and of the LangChain pipeline test.

Tokens are lowercase ASCII alphanumeric runs; k1 = 1.2, b = 0.75 (the settings the
pipeline numbers in ANCHORS were measured with); idf = ln(1 + (N - df + 0.5) / (df + 0.5)).
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class BM25:
    """An inverted index over ``texts``; :meth:`top` returns the best document positions."""

    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.n = len(texts)
        docs = [Counter(tokenize(t)) for t in texts]
        lengths = np.array([sum(d.values()) for d in docs], dtype=np.float64)
        avg = lengths.mean() if self.n and lengths.mean() > 0 else 1.0
        norm = k1 * (1 - b + b * lengths / avg)
        postings: dict[str, tuple[list[int], list[float]]] = {}
        for i, d in enumerate(docs):
            for term, tf in d.items():
                rows, tfs = postings.setdefault(term, ([], []))
                rows.append(i)
                tfs.append(tf)
        self.index = {}
        for term, (rows, tfs) in postings.items():
            rows_a = np.array(rows, dtype=np.int64)
            tf = np.array(tfs, dtype=np.float64)
            idf = math.log(1 + (self.n - len(rows) + 0.5) / (len(rows) + 0.5))
            self.index[term] = (rows_a, idf * tf * (k1 + 1) / (tf + norm[rows_a]))

    def scores(self, query: str) -> np.ndarray:
        out = np.zeros(self.n, dtype=np.float64)
        for term in tokenize(query):  # a repeated query term counts again, as in Lucene
            hit = self.index.get(term)
            if hit is not None:
                out[hit[0]] += hit[1]
        return out

    def top(self, query: str, k: int) -> list[int]:
        """Positions of the ``k`` best documents, best first (ties: lower position first;
        documents sharing no term with the query are left out)."""
        s = self.scores(query)
        k = min(k, self.n)
        if k <= 0:
            return []
        cand = np.argpartition(-s, k - 1)[:k] if k < self.n else np.arange(self.n)
        order = cand[np.lexsort((cand, -s[cand]))]
        return [int(i) for i in order if s[i] > 0]
