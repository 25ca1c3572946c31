"""The HDF5 event file: exact round trip, and clear errors for bad files."""

import h5py
import numpy as np
import pytest
from support.events import random_hits

from argonic import ArgonicError
from argonic.detector.event import Event, PlaneFrame
from argonic.detector.eventfile import FORMAT_VERSION, EventFile, EventFileWriter


def make_event(rng, event_id, n_hits=50):
    dense = np.zeros((200, 1500), np.float32)
    mask = rng.random(dense.shape) < 0.01
    dense[mask] = rng.normal(5, 2, mask.sum())
    frames = [
        PlaneFrame.from_dense(0, 2, dense),
        PlaneFrame.from_dense(0, 0, dense[:, ::-1].copy()),
    ]
    hits = random_hits(rng, n_hits)
    return Event(7, 0, event_id, frames, hits), dense


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(1)
    events = [make_event(rng, i, n_hits=n) for i, n in enumerate([50, 0, 13])]
    path = tmp_path / "ev.h5"
    with EventFileWriter(path, "mini", seed=3, run=7) as w:
        for ev, _ in events:
            w.write(ev)
    with EventFile(path) as f:
        assert len(f) == 3 and f.detector.name == "mini" and f.seed == 3
        for (orig, dense), back in zip(events, f, strict=True):
            assert (back.run, back.event) == (orig.run, orig.event)
            np.testing.assert_array_equal(back.frames[0].dense(), dense)
            for name, col in orig.hits.columns().items():
                np.testing.assert_array_equal(getattr(back.hits, name), col)
        assert len(f[1].hits) == 0


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "ev.h5"
    with pytest.raises(RuntimeError), EventFileWriter(path, "mini", seed=1, run=1) as w:
        w.write(make_event(np.random.default_rng(0), 0)[0])
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_unknown_detector_is_refused_before_writing(tmp_path):
    with pytest.raises(ArgonicError, match="unknown detector 'nope'"):
        EventFileWriter(tmp_path / "x.h5", "nope", seed=1, run=1)
    assert list(tmp_path.iterdir()) == []


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ArgonicError, match="no such file"):
        EventFile(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(ArgonicError, match="not a readable HDF5 file"):
        EventFile(junk)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(ArgonicError, match="not an argonic event file"):
        EventFile(foreign)
    good = tmp_path / "good.h5"
    with EventFileWriter(good, "mini", seed=1, run=1) as w:
        w.write(make_event(np.random.default_rng(0), 0)[0])
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ArgonicError):
        EventFile(truncated)[0]
    with EventFile(good) as f, pytest.raises(ArgonicError, match="event index 5 out of range"):
        f[5]


@pytest.mark.parametrize("version", [0, FORMAT_VERSION + 1])
def test_other_format_versions_are_refused_by_name(tmp_path, version, capsys):
    """A file of another format version is refused with both versions named, by the
    library and by a command (one line, exit 2), before any event is read."""
    path = tmp_path / "other.h5"
    with EventFileWriter(path, "mini", seed=1, run=1) as w:
        w.write(make_event(np.random.default_rng(0), 0)[0])
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = version
    message = f"event file format version {version}, expected 1 or {FORMAT_VERSION}"
    with pytest.raises(ArgonicError, match=message):
        EventFile(path)
    from argonic.cli import main

    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_files_without_michel_ids_read_one_id_per_michel_hit(tmp_path):
    """Files written before the michel_id column: each Michel hit reads as electron 1."""
    rng = np.random.default_rng(5)
    ev, _ = make_event(rng, 0, n_hits=80)
    path = tmp_path / "old.h5"
    with EventFileWriter(path, "mini", seed=1, run=7) as w:
        w.write(ev)
    with h5py.File(path, "a") as f:
        del f["events/000000/hits/michel_id"]
    with EventFile(path) as f:
        back = f[0].hits
    np.testing.assert_array_equal(back.michel, ev.hits.michel)
    np.testing.assert_array_equal(back.michel_id, ev.hits.michel.astype(np.int32))
    assert ev.hits.michel.any() and len(np.unique(ev.hits.michel_id)) > 2
