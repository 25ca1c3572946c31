"""The chain's hits take the truth of the stored hits hit by hit: a peak moved by less than
half a tick (frames recomputed on another CPU) keeps its label, a hit the simulation did
not find gets none, and the others are not disturbed by it."""

from __future__ import annotations

import numpy as np

from argonic.detector.event import NONE
from argonic.detector.eventfile import EventFile
from argonic.reco.chain import reconstruct_hits


def test_labels_follow_each_hit_not_the_whole_list(mini_events) -> None:
    with EventFile(mini_events) as f:
        event = f[0]
    stored = event.hits
    assert len(np.unique(stored.label)) > 1 and stored.michel.any()
    same = reconstruct_hits(event.frames, stored)
    np.testing.assert_array_equal(same.label, stored.label)
    np.testing.assert_array_equal(same.michel_id, stored.michel_id)
    # the stored hits as another CPU's chain might have found them: peaks moved by 0.3
    # tick, one hit missing, one hit moved to another wire
    cols = stored.columns()
    cols["peak_tick"] = cols["peak_tick"] + 0.3
    cols["wire"] = cols["wire"].copy()
    cols["wire"][5] += 1000
    keep = np.ones(len(stored), bool)
    keep[7] = False
    moved = type(stored)(**{k: v[keep] for k, v in cols.items()})
    got = reconstruct_hits(event.frames, moved)
    others = np.setdiff1d(np.arange(len(stored)), [5, 7])
    np.testing.assert_array_equal(got.label[others], stored.label[others])
    np.testing.assert_array_equal(got.michel[others], stored.michel[others])
    assert got.label[5] == got.label[7] == NONE and not got.michel[[5, 7]].any()
    # a peak a whole tick away is another hit
    cols["peak_tick"] = stored.peak_tick + 1.0
    far = reconstruct_hits(event.frames, type(stored)(**cols))
    assert (far.label == NONE).mean() > 0.9
