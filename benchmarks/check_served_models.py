"""Remote and local give the same class on every hit, for each served model.

For each model of the shipped repository named on the command line: one `argonic serve`
(a child process on 127.0.0.1), then EmTrackMichelId on every hit of the events, locally
(the model run in-process by the backend the server loads for it: ``RepositoryInterface``)
and remotely in patch mode and in plane mode (its ``_plane`` twin). Reports, per model and
mode, the hits, the share with the local class and the largest score difference.

    python benchmarks/check_served_models.py --events test16.h5 --first 2 \\
        --models emtrkmichelid emtrkmichelid_openvino emtrkmichelid_int8
"""

from __future__ import annotations

import json
from pathlib import Path

import harness
import numpy as np

from argonic.detector.eventfile import EventFile
from argonic.inference.local import RepositoryInterface
from argonic.inference.local_server import LocalServer
from argonic.inference.remote import RemoteInterface
from argonic.reco.module import EmTrackMichelId
from argonic.repository import shipped_repository


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--events", type=Path, required=True)
    p.add_argument("--first", type=int, default=1, help="events from the start of the file")
    p.add_argument("--models", nargs="+", required=True)
    a = p.parse_args()
    repo = shipped_repository()
    results = []
    with EventFile(a.events) as f:
        events = [f[i] for i in range(a.first)]
        detector = f.detector
    for model in a.models:
        with RepositoryInterface(model, repo, batch_size=1693) as local:
            expected = [EmTrackMichelId(local, detector).produce(e, e.hits) for e in events]
        server = LocalServer(repo, model)
        address = server.start()
        try:
            for mode in ("patch", "plane"):
                settings = {"servers": [address], "model_name": model, "request_mode": mode}
                with RemoteInterface({"batch_size": 1693, "remote": settings}) as remote:
                    got = [EmTrackMichelId(remote, detector).produce(e, e.hits) for e in events]
                    planes = remote.stats()["total"]["plane_requests"]
                a_, b_ = np.concatenate(expected), np.concatenate(got)
                row = {
                    "model": model,
                    "mode": mode,
                    "plane_requests": planes,
                    "hits": len(a_),
                    "same_class": float(np.mean(a_[:, :3].argmax(1) == b_[:, :3].argmax(1))),
                    "max_abs_diff": float(np.abs(a_ - b_).max()),
                }
                print(json.dumps(row), flush=True)
                results.append(row)
        finally:
            server.stop()
    harness.report(results, a)


if __name__ == "__main__":
    main()
