"""Run inside an emulated CPU (``qemu-x86_64 -cpu Haswell python openvino_kernel.py WORK``) by
tests/model/test_int8_kernels.py: the shipped OpenVINO int8 model through argonic serve's
backend on WORK/x.npy patches; writes WORK/ov_scores.npy and, in WORK/ov.json, the
precision OpenVINO compiled each convolution and dense layer to on this CPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from argonic.inference.local import RepositoryInterface

work = Path(sys.argv[1])
with RepositoryInterface("emtrkmichelid_openvino") as interface:
    np.save(work / "ov_scores.npy", interface.predict(np.load(work / "x.npy")))
    runtime = interface._backend.compiled.get_runtime_model()  # type: ignore[attr-defined]
layers = [
    [op.get_rt_info()[k].astype(str) for k in ("layerType", "runtimePrecision")]
    for op in runtime.get_ordered_ops()
    if op.get_rt_info()["layerType"].astype(str) in ("Convolution", "FullyConnected")
]
(work / "ov.json").write_text(json.dumps(layers))
