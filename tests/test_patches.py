"""PointIdAlg patch rules against a slow, obviously-correct per-hit, per-pixel reference."""

import numpy as np
import pytest
from support.fuzz import plane_tensors

from argonic.detector.event import Event, Hits, PlaneFrame
from argonic.detector.geometry import get_detector
from argonic.patches import event_patches


def reference_patch(dense: np.ndarray, calib_c: float, wire: int, peak_tick: float) -> np.ndarray:
    """One patch, pixel by pixel, straight from the rules in docs/reference.md, section 4."""
    n_wires, n_ticks = dense.shape
    centre_bin = int(peak_tick // 6)
    patch = np.zeros((48, 48), np.float64)
    for i in range(48):
        w = wire - 24 + i
        if not 0 <= w < n_wires:
            continue
        for j in range(48):
            b = centre_bin - 24 + j
            if not 0 <= b * 6 < n_ticks:
                continue
            ticks = dense[w, b * 6 : b * 6 + 6]
            mean = ticks.sum() / 6.0  # missing ticks past the end count as zero
            adc = min(max(mean * 1.2e-3 / calib_c, -10.0), 30.0)
            patch[i, j] = -5.0 + (adc + 10.0) * 20.0 / 40.0
    return patch


@pytest.mark.parametrize("n_ticks", [600, 603])
def test_patches_match_slow_reference_including_edges(n_ticks):
    det = get_detector("mini")
    rng = np.random.default_rng(5)
    frames, hit_cols = [], []
    for plane in range(3):
        n_wires = det.planes[plane].n_wires
        dense = np.zeros((n_wires, n_ticks), np.float32)
        mask = rng.random(dense.shape) < 0.05
        # values spanning the clip range, both signs (induction-like undershoots included)
        dense[mask] = rng.uniform(-20, 60, mask.sum()).astype(np.float32)
        frames.append(PlaneFrame.from_dense(0, plane, dense))
        # hits everywhere, forced onto all four edges and corners
        wires = np.concatenate(
            [rng.integers(0, n_wires, 12), [0, n_wires - 1, 0, n_wires - 1, 23, 24]]
        )
        ticks = np.concatenate(
            [rng.uniform(0, n_ticks, 12), [0.0, n_ticks - 0.5, n_ticks - 0.5, 0.0, 143.9, 144.0]]
        )
        hit_cols.append((np.full(len(wires), plane), wires, ticks, dense))
    hits = Hits(
        tpc=np.zeros(sum(len(h[1]) for h in hit_cols)),
        plane=np.concatenate([h[0] for h in hit_cols]),
        wire=np.concatenate([h[1] for h in hit_cols]),
        peak_tick=np.concatenate([h[2] for h in hit_cols]),
        sigma=np.ones(54),
        amplitude=np.ones(54),
        integral=np.ones(54),
        label=np.zeros(54),
        michel=np.zeros(54),
    )
    # shuffle the hit order: patches must come back in hit order
    order = rng.permutation(len(hits))
    hits = hits.select(order)
    event = Event(1, 0, 0, frames, hits)
    patches = event_patches(event, det)
    assert patches.shape == (len(hits), 48, 48, 1) and patches.dtype == np.float32
    dense_by_plane = {h[0][0]: h[3] for h in hit_cols}
    for k in range(len(hits)):
        p = int(hits.plane[k])
        ref = reference_patch(
            dense_by_plane[p], det.planes[p].calib_c, int(hits.wire[k]), float(hits.peak_tick[k])
        )
        np.testing.assert_allclose(patches[k, :, :, 0], ref, rtol=1e-5, atol=1e-5)


def test_patch_value_range_and_zero_outside():
    det = get_detector("mini")
    dense = np.zeros((det.planes[2].n_wires, 600), np.float32)
    dense[0, :] = 1e6  # saturates: clipped to 30 -> 15
    frame = PlaneFrame.from_dense(0, 2, dense)
    hits = Hits(
        tpc=[0],
        plane=[2],
        wire=[0],
        peak_tick=[300.0],
        sigma=[1],
        amplitude=[1],
        integral=[1],
        label=[0],
        michel=[False],
    )
    patch = event_patches(Event(1, 0, 0, [frame], hits), det)[0, :, :, 0]
    assert np.all(patch[:24] == 0)  # wires -24..-1 are outside the plane
    assert np.all(patch[24] == 15.0)  # wire 0 saturates at OutMax
    assert np.all(patch[25:] == 0)


def test_empty_hits_give_empty_patches():
    det = get_detector("mini")
    patches = event_patches(Event(1, 0, 0, [], Hits()), det)
    assert patches.shape == (0, 48, 48, 1)


def test_sampled_patches_are_drawn_hits_of_every_event(mini_events):
    """The same number of hits from each event, each row the patch event_patches cuts for
    that hit, and the draw fixed by the generator's seed."""
    from argonic.detector.eventfile import EventFile
    from argonic.patches import sampled_patches

    with EventFile(mini_events) as f:
        x = sampled_patches(f, f.detector, 100, np.random.default_rng(3))
        again = sampled_patches(f, f.detector, 100, np.random.default_rng(3))
        full = [event_patches(f[i], f.detector) for i in range(len(f))]
    assert x.shape == (100, 48, 48, 1)
    np.testing.assert_array_equal(x, again)
    # rows 0-49 come from event 0, 50-99 from event 1: each equals some patch of that event
    for part, patches in ((x[:50], full[0]), (x[50:], full[1])):
        flat = patches.reshape(len(patches), -1)
        for row in part.reshape(50, -1):
            assert (flat == row).all(axis=1).any()
    assert len({row.tobytes() for row in x[:50]}) > 40  # different hits, not one repeated


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"plane_shape": np.array([0, 200], np.int32)}, "plane_shape must be 2 positive sizes"),
        ({"plane_shape": np.array([-64, 200], np.int32)}, "plane_shape must be 2 positive sizes"),
        ({"plane_shape": np.array([64], np.int32)}, "plane_shape must be 2 positive sizes"),
        ({"plane_shape": np.array([1 << 21, 8], np.int32)}, "plane_shape must be 2 positive"),
        ({"plane_shape": np.array([1 << 15, 1 << 14], np.int32)}, "is too large"),
        ({"pixel_delta": np.array([130, 1, 0, 1], np.int32)}, "must increase strictly"),
        ({"pixel_delta": np.array([12_800, 1, 1, 1], np.int32)}, "lie inside plane_shape"),
        ({"pixel_value": np.array([1, np.nan, 3, 0.5], np.float32)}, "NaN or inf"),
        ({"hit_tick": np.array([30.0, np.inf], np.float32)}, "hit_tick contains NaN, inf"),
        ({"hit_tick": np.array([30.0, 1e12], np.float32)}, "absurd values"),
        ({"hit_tick": np.array([30.0], np.float32)}, "hit_wire has 2 values but hit_tick 1"),
    ],
)
def test_absurd_plane_requests_are_refused_by_name(changes, message) -> None:
    """Shapes and ticks no detector has are refused before an image is allocated."""
    from argonic.patches import PlaneRequestError, decode_plane

    decode_plane(plane_tensors())  # the unchanged request decodes
    with pytest.raises(PlaneRequestError, match=message):
        decode_plane(plane_tensors(**changes))


def test_plane_hits_far_outside_the_plane_get_empty_patches() -> None:
    """A hit on a wire or at a tick outside the plane is legal (a patch at an edge is
    partly outside): its patch holds only zeros, it does not index out of the image."""
    from argonic.patches import decode_plane, plane_patch_chunks

    image, wire, tick = decode_plane(
        plane_tensors(
            hit_wire=np.array([-500, 5000], np.int32), hit_tick=np.array([-9e5, 9e5], np.float32)
        )
    )
    patches = np.concatenate([p.copy() for _, _, p in plane_patch_chunks(image, wire, tick, 16)])
    assert patches.shape == (2, 48, 48, 1) and not patches.any()
