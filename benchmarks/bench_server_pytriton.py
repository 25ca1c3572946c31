"""Serve an ONNX model with a real NVIDIA Triton (PyTriton, ONNX Runtime callable) until SIGTERM.

The comparison server for bench_server.py (``--pytriton-python``); it needs only
nvidia-pytriton, onnxruntime and numpy, so it runs in a separate virtualenv:

    python -m venv ptvenv && ptvenv/bin/pip install nvidia-pytriton onnxruntime

Prints ``READY <grpc port>`` on stdout once Triton answers.
"""

from __future__ import annotations

import argparse
import signal
import threading

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-file", required=True)
    p.add_argument("--name", default="emtrkmichelid")
    p.add_argument("--grpc-port", type=int, default=18101)
    p.add_argument("--max-batch-size", type=int, default=4096)
    p.add_argument("--identity", action="store_true", help="also serve an identity model")
    a = p.parse_args()

    session = ort.InferenceSession(a.model_file, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]

    @batch
    def infer(main_input: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(outputs, session.run(outputs, {"main_input": main_input}), strict=True))

    config = TritonConfig(
        grpc_port=a.grpc_port,
        http_port=a.grpc_port + 1,
        metrics_port=a.grpc_port + 2,
        grpc_address="127.0.0.1",
        http_address="127.0.0.1",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Triton(
        config=config, security_config=TritonSecurityConfig(restricted_endpoints=[])
    ) as triton:
        triton.bind(
            a.name,
            infer,
            inputs=[Tensor(name="main_input", dtype=np.float32, shape=(48, 48, 1))],
            outputs=[
                Tensor(name=n, dtype=np.float32, shape=(s.shape[-1],))
                for n, s in zip(outputs, session.get_outputs(), strict=True)
            ],
            config=ModelConfig(max_batch_size=a.max_batch_size, batcher=DynamicBatcher()),
        )
        if a.identity:

            @batch
            def identity(main_input: np.ndarray) -> dict[str, np.ndarray]:
                return {"output": main_input}

            triton.bind(
                "identity",
                identity,
                inputs=[Tensor(name="main_input", dtype=np.float32, shape=(48, 48, 1))],
                outputs=[Tensor(name="output", dtype=np.float32, shape=(48, 48, 1))],
                config=ModelConfig(max_batch_size=a.max_batch_size, batcher=DynamicBatcher()),
            )
        triton.run()
        print(f"READY {a.grpc_port}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
