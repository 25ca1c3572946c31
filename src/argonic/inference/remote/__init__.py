"""Remote ModelInterface: a KServe v2 / Triton gRPC client (SONIC).

Patches [N, 48, 48, 1] float32 are sent as ModelInfer requests of ``batch_size`` rows
(the paper compares 235 with 1693); the replies "em_trk_none_netout" [n, 3] and
"michel_netout" [n, 1] are joined into [N, 4] scores [track, em, none, michel] in the
order of the patches. Every patch is answered exactly once: a request that fails on one
server is sent again, whole, to another.

Configuration: the ``[inference]`` table (``batch_size``, ``[inference.remote]``); every
key, its default and its meaning are in :mod:`argonic.settings` (docs/configuration.md).

API: ``RemoteInterface(config, **overrides)`` (or ``make_interface`` with interface =
"remote"), ``predict(patches)``, ``predict_plane(image, wire, peak_tick)``, ``stats()`` (a
dict for ``argonic reco --json``), ``progress``, ``connect()`` (check the servers now
rather than at the first predict), ``close()`` (also a context manager).

Errors: UNAVAILABLE, DEADLINE_EXCEEDED, connection errors and NOT_FOUND/not-ready models
move a request to the next server (the failed server is reconnected and checked again
before its next use); INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED and
UNIMPLEMENTED are fatal. When every server failed ``retries + 1`` times for one request,
RemoteInferenceError names the servers and the last error; a server serving another model
raises ModelMismatchError.

The modules, one job each:

- ``interface``: RemoteInterface, the thin front that wires the others together;
- ``config``: validation of the settings and what is derived from them (repository,
  TLS credentials, per-call options);
- ``identity``: the expected model and the checks a server must pass (names, shapes,
  sha256), for the network and the plane model;
- ``wire``: ModelInferRequest encoding (patches, planes, fp16, tensor compression) and
  ModelInferResponse decoding;
- ``channel``: one server's gRPC channel and health;
- ``pool``: failover: server order, retry rounds, backoff, the local fallback server;
- ``dispatch``: one call's requests, in flight at most ``max_in_flight`` at once;
- ``stats``: call statistics and the servers' ModelStatistics deltas;
- ``plane``: plane mode (each (TPC, plane) as one request) and its fallback to patches;
- ``errors``: the exceptions and which gRPC statuses are worth another server.
"""

from argonic.inference.remote.errors import ModelMismatchError, RemoteInferenceError
from argonic.inference.remote.identity import ModelSignature, TensorSpec
from argonic.inference.remote.interface import RemoteInterface
from argonic.inference.remote.stats import CallStats

__all__ = [
    "CallStats",
    "ModelMismatchError",
    "ModelSignature",
    "RemoteInferenceError",
    "RemoteInterface",
    "TensorSpec",
]
