"""How a filtered search runs, once the filter is resolved to the rows it selects.

Three ways, chosen per call from the number of matching rows (``choose``):

- ``exact``: at most ``shortlist`` rows match. A full pipeline would shortlist all of
  them anyway, so they are rescored exactly, with no coarse pass and no probing: the
  result is the exact filtered top-k over the dequantized scores.
- ``listed``: a restricted Hamming pass over just the matching rows of the probed groups
  (``search.listed_pass``): the work is proportional to the matching rows, not to the
  store, so a selective filter makes a query cheaper than an unfiltered one.
- ``bitmap``: the ordinary coarse pass with the non-matching rows hidden in its dead-row
  mask (wide filters, where the list would hold most rows anyway).

``BITMAP_FRACTION`` (half the stored rows) is where the list would hold most of what the
coarse pass reads anyway; it is a chosen value, not a measured crossover:
``benchmarks/filtered.py`` measures the filters as a user sees them (docs/benchmarks.md,
"Filtered search (issue 11)"), not ``listed`` against ``bitmap`` at equal selectivity.

With ``nprobe``, a selective filter would starve the shortlist: the ``nprobe`` groups
nearest the query hold few matching rows, often fewer than ``k``, and not the best ones.
``filtered_probe`` therefore probes, nearest first, as many groups as it takes for the
*matching* rows probed to reach the number of rows the unfiltered probe would scan, and
at least ``k`` (at least ``nprobe`` groups; all groups with a match if fewer rows match). For a filter that
is independent of the vectors, a selectivity ``s`` then probes about ``nprobe / s``
groups and scans about as many rows as the unfiltered search, so recall stays at the
unfiltered level; a filter that clusters (one tenant's documents in a few groups) needs
fewer groups. Numpy and a selection kernel (``kernels.probe.probe_covering``), no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels.probe import probe_covering

EXACT, LISTED, BITMAP = "exact", "listed", "bitmap"
BITMAP_FRACTION = 0.5  # matching / stored rows from which the bitmap pass is used (chosen, see above)


@dataclass(frozen=True)
class FilterPlan:
    """The way one filtered search runs and the counts it was chosen from."""

    strategy: str
    matching: int  # live rows the filter (and filter_ids) select
    stored: int  # rows stored, deleted included (what an unfiltered full scan walks)
    shortlist: int  # effective shortlist of the search


def choose(matching: int, stored: int, shortlist: int) -> FilterPlan:
    """The strategy for a search over ``matching`` of ``stored`` rows."""
    if matching <= shortlist:
        strategy = EXACT
    elif matching >= BITMAP_FRACTION * stored:
        strategy = BITMAP
    else:
        strategy = LISTED
    return FilterPlan(strategy, matching, stored, shortlist)


def filtered_probe(closeness: np.ndarray, group_rows: np.ndarray, group_matches: np.ndarray,
                   nprobe: int | None, k: int) -> np.ndarray:
    """(nq, n_groups) bool: the groups each query scans under a filter.

    ``closeness[q, g]``: larger is nearer (the order ``search.probe_mask`` uses);
    ``group_rows[g]``: rows stored in group ``g`` (all segments); ``group_matches[g]``:
    matching rows in it. Groups without a match are never scanned. At least ``k`` matching
    rows are probed (all of them if fewer match), so a search returns ``k`` hits.
    """
    nq, n_groups = closeness.shape
    has = group_matches > 0
    if nprobe is None or nprobe >= n_groups:
        return np.broadcast_to(has, (nq, n_groups)).copy()
    mask = np.empty((nq, n_groups), dtype=np.bool_)
    probe_covering(np.ascontiguousarray(closeness, dtype=np.float32), group_rows.astype(np.int64),
                   group_matches.astype(np.int64), np.int64(nprobe), np.int64(k), mask)
    return mask
