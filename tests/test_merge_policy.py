"""The merge policy's write-amplification bound (issue 9, finding 6).

The rule it replaced -- "when there are more than F segments, merge the F smallest" --
rewrote each row 357 times after 10k one-row adds. The size-tiered policy
(``zenstore.merge.plan_merge``) moves a row to a strictly higher tier with every
rewrite, so in an add-only store a row is rewritten at most ``floor(log_F N)`` times and
there are at most ``(F - 1)(floor(log_F N) + 1)`` segments. Checked on the policy alone
(any batch sizes) and on real stores, counting the rows every merge writes.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from zenstore import Store
from zenstore import writer as writer_mod
from zenstore.merge import max_rewrites, simulate, tier


def test_tier_is_floor_log():
    for fanout in (2, 3, 8):
        for n in range(0, 5000, 7):
            assert tier(n, fanout) == (0 if n < fanout else int(np.floor(np.log(n) / np.log(fanout) + 1e-9)))


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(st.integers(1, 3000), min_size=1, max_size=300), fanout=st.integers(2, 10))
def test_policy_bound_holds_for_any_batch_sizes(batches, fanout):
    a = simulate(batches, fanout)
    assert a.max_rewrites <= a.bound == max_rewrites(sum(batches), fanout)
    assert a.most_segments <= (fanout - 1) * (tier(a.rows, fanout) + 1)


def test_ten_thousand_one_row_adds_rewrite_each_row_log_times():
    a = simulate([1] * 10_000, 8)
    assert a.max_rewrites <= a.bound == 4  # was 357 under "merge the 8 smallest"
    assert a.mean_rewrites <= 4.0 and a.most_segments <= 7 * 5
    print(f"\n10k one-row adds, fanout 8: max {a.max_rewrites} rewrites per row, mean "
          f"{a.mean_rewrites:.2f}, at most {a.most_segments} segments")


def test_real_store_rewrites_each_row_at_most_log_times(tmp_path, monkeypatch):
    """600 one-row (and some larger) adds into a real store with fanout 3: every merge's
    rows are counted per id; no id is rewritten more than the bound."""
    rewrites: dict[int, int] = {}
    real = writer_mod.merge_segments

    def counting(root, seg_id, config, n_groups, segments, *rest):
        for seg in segments:
            live = seg.ids if seg.dead.size == 0 else seg.ids[seg.dead == 0]
            for i in live.tolist():
                rewrites[i] = rewrites.get(i, 0) + 1
        return real(root, seg_id, config, n_groups, segments, *rest)

    monkeypatch.setattr(writer_mod, "merge_segments", counting)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((800, 64)).astype(np.float32)
    fanout = 3
    with Store.create(tmp_path / "s.zen", dim=64, n_base=4, min_rows_per_base=4, segment_fanout=fanout) as s:
        s.add(list(range(40)), x[:40])
        n = 40
        while n < 800:
            b = 1 if n < 640 else 20
            s.add(list(range(n, n + b)), x[n : n + b])
            n += b
            assert s.stats()["segments"] <= (fanout - 1) * (tier(n, fanout) + 1)
        assert len(s) == 800 and s.verify() == []
        ids, _ = s.search_batch(x[:5], k=1, shortlist=800)
        assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert rewrites, "no merge happened"
    assert max(rewrites.values()) <= max_rewrites(800, fanout)
