"""TLS, mutual TLS and restricted protocols / APIs on a real `argonic serve`, with Triton's
flags, on both protocols: what gRPC protects, HTTP does not leave open.

Clients: tritonclient.grpc (ssl, root certificate, client certificate, headers),
tritonclient.http (headers) and argonic's own remote client through its public settings
(root_cert, client_cert, client_key, token). Certificates are made for the test with the
openssl CLI. Every server gets free ports for each endpoint it opens.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from support import fuzz
from support.certs import Certificates, make_certificates
from support.models import head_weights, reference_heads
from support.processes import argonic_serve, wait_serving
from tritonclient.utils import InferenceServerException

from argonic.inference import make_interface
from argonic.inference.remote.errors import RemoteInferenceError

X = fuzz.patches(5, seed=11)
ADMIN = ("admin-key", "s3cret")
TOKEN = "farm-token"


def truth() -> np.ndarray:
    softmax, michel = reference_heads(X, head_weights(0))
    return np.concatenate([softmax, michel], axis=1)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fuzz.make_repository(tmp_path_factory.mktemp("repo"))


def triton_scores(client, **kw) -> np.ndarray:
    """Scores of X through a tritonclient of either protocol (grpc or http)."""
    module = httpclient if isinstance(client, httpclient.InferenceServerClient) else grpcclient
    tensor = module.InferInput("main_input", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    result = client.infer(fuzz.MODEL, [tensor], **kw)
    return np.concatenate(
        [result.as_numpy("em_trk_none_netout"), result.as_numpy("michel_netout")], axis=1
    )


def remote_scores(address: str, repo: Path, **settings: object) -> np.ndarray:
    table = {"servers": [address], "model_repository": str(repo), "timeout_s": 10.0}
    interface = make_interface(
        {"interface": "remote", "batch_size": 64, "remote": {**table, **settings}}
    )
    try:
        return interface.predict(X)
    finally:
        interface.close()


def refused(call) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value.status()


def http_refused(call, header: str) -> None:
    """Triton's answer to a restricted HTTP API: 403, naming the header."""
    with pytest.raises(InferenceServerException) as info:
        call()
    assert info.value.status() == "403"
    assert info.value.message() == f"This API is restricted, expecting header '{header}'"


def test_tls(certs: Certificates, repo: Path, tmp_path: Path) -> None:
    flags = ["--grpc-use-ssl", f"--grpc-server-cert={certs.server_cert}"]
    flags += [f"--grpc-server-key={certs.server_key}"]
    with argonic_serve(repo, tmp_path / "log", *flags) as served:
        wait_serving(served, grpc.ssl_channel_credentials(certs.ca.read_bytes()))
        client = grpcclient.InferenceServerClient(
            served.address, ssl=True, root_certificates=str(certs.ca)
        )
        np.testing.assert_allclose(triton_scores(client), truth(), atol=1e-5)
        np.testing.assert_allclose(
            remote_scores(served.address, repo, root_cert=str(certs.ca)), truth(), atol=1e-5
        )
        plain = grpcclient.InferenceServerClient(served.address)
        assert refused(plain.is_server_live) == "StatusCode.UNAVAILABLE"
        wrong_ca = grpcclient.InferenceServerClient(
            served.address, ssl=True, root_certificates=str(certs.rogue_ca)
        )
        assert refused(wrong_ca.is_server_live) == "StatusCode.UNAVAILABLE"
        assert "(TLS)" in served.log_text()


def test_mutual_tls(certs: Certificates, repo: Path, tmp_path: Path) -> None:
    flags = ["--grpc-use-ssl-mutual=true", f"--grpc-server-cert={certs.server_cert}"]
    flags += [f"--grpc-server-key={certs.server_key}", f"--grpc-root-cert={certs.ca}"]
    with argonic_serve(repo, tmp_path / "log", *flags) as served:
        wait_serving(
            served,
            grpc.ssl_channel_credentials(
                certs.ca.read_bytes(), certs.client_key.read_bytes(), certs.client_cert.read_bytes()
            ),
        )

        def client(cert: Path | None, key: Path | None) -> grpcclient.InferenceServerClient:
            return grpcclient.InferenceServerClient(
                served.address,
                ssl=True,
                root_certificates=str(certs.ca),
                private_key=str(key) if key else None,
                certificate_chain=str(cert) if cert else None,
            )

        good = client(certs.client_cert, certs.client_key)
        np.testing.assert_allclose(triton_scores(good), truth(), atol=1e-5)
        mine = remote_scores(
            served.address,
            repo,
            root_cert=str(certs.ca),
            client_cert=str(certs.client_cert),
            client_key=str(certs.client_key),
        )
        np.testing.assert_allclose(mine, truth(), atol=1e-5)
        assert refused(client(None, None).is_server_live) == "StatusCode.UNAVAILABLE"
        rogue = client(certs.rogue_cert, certs.rogue_key)
        assert refused(rogue.is_server_live) == "StatusCode.UNAVAILABLE"


RESTRICTIONS = (
    f"model-repository,shared-memory:{ADMIN[0]}={ADMIN[1]}",
    f"inference,metadata,model-config,statistics:authorization=Bearer {TOKEN}",
)


def test_restricted_protocols(repo: Path, tmp_path: Path) -> None:
    key, value = ADMIN
    flags = [f"--grpc-restricted-protocol={r}" for r in RESTRICTIONS]
    flags += [f"--http-restricted-api={r}" for r in RESTRICTIONS]
    with argonic_serve(repo, tmp_path / "log", *flags) as served:
        wait_serving(served)  # health stays open (probes)
        client = grpcclient.InferenceServerClient(served.address)
        bearer = {"authorization": f"Bearer {TOKEN}"}
        with pytest.raises(InferenceServerException) as info:
            triton_scores(client)
        assert info.value.status() == "StatusCode.UNAVAILABLE"
        assert info.value.message() == (
            "This protocol is restricted, expecting header 'authorization'"
        )
        np.testing.assert_allclose(triton_scores(client, headers=bearer), truth(), atol=1e-5)
        assert refused(lambda: client.get_model_metadata(fuzz.MODEL)) == "StatusCode.UNAVAILABLE"
        assert client.get_model_metadata(fuzz.MODEL, headers=bearer).name == fuzz.MODEL
        with pytest.raises(InferenceServerException, match="expecting header 'admin-key'"):
            client.get_model_repository_index(headers=bearer)
        wrong = {key: "guess"}
        assert refused(lambda: client.unload_model(fuzz.MODEL, headers=wrong)).endswith(
            "UNAVAILABLE"
        )
        index = client.get_model_repository_index(headers={key: value})
        assert fuzz.MODEL in {m.name for m in index.models}
        # the key opens the category, model control still follows --model-control-mode
        with pytest.raises(InferenceServerException, match="load / unload is not allowed"):
            client.unload_model(fuzz.MODEL, headers={key: value})
        assert client.is_server_live() and client.is_model_ready(fuzz.MODEL)
        # argonic's own client: its token setting sends "authorization: Bearer <token>"
        with pytest.raises(RemoteInferenceError, match="expecting header 'admin-key'"):
            remote_scores(served.address, repo, token=TOKEN, retries=0)  # index restricted
        # where the model-repository protocol is restricted, clients skip the index check
        mine = remote_scores(served.address, repo, token=TOKEN, check_index=False)
        np.testing.assert_allclose(mine, truth(), atol=1e-5)
        # shared-memory registration is restricted too: refused before it touches /dev/shm
        with pytest.raises(InferenceServerException, match="expecting header 'admin-key'"):
            client.register_system_shared_memory("r", "/argonic_test_absent", 64)


def test_restricted_apis_over_http(repo: Path, tmp_path: Path) -> None:
    """The same restrictions, the same answers as Triton's HTTP server, category by
    category; health stays open; the key opens model control only as far as
    --model-control-mode allows, and a refused unload leaves the model ready."""
    key, value = ADMIN
    flags = [f"--grpc-restricted-protocol={r}" for r in RESTRICTIONS]
    flags += [f"--http-restricted-api={r}" for r in RESTRICTIONS]
    flags += ["--model-control-mode=explicit"]
    with argonic_serve(repo, tmp_path / "log", *flags) as served:
        wait_serving(served)
        client = httpclient.InferenceServerClient(served.http_address)
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert client.is_server_live() and client.is_model_ready(fuzz.MODEL)
        http_refused(lambda: triton_scores(client), "authorization")
        http_refused(
            lambda: triton_scores(client, headers={"authorization": "Bearer x"}), "authorization"
        )
        np.testing.assert_allclose(triton_scores(client, headers=bearer), truth(), atol=1e-5)
        http_refused(lambda: client.get_model_metadata(fuzz.MODEL), "authorization")
        http_refused(lambda: client.get_server_metadata(), "authorization")
        http_refused(lambda: client.get_model_config(fuzz.MODEL), "authorization")
        http_refused(lambda: client.get_inference_statistics(fuzz.MODEL), "authorization")
        assert client.get_model_metadata(fuzz.MODEL, headers=bearer)["name"] == fuzz.MODEL
        http_refused(lambda: client.get_model_repository_index(headers=bearer), key)
        http_refused(lambda: client.unload_model(fuzz.MODEL), key)
        http_refused(lambda: client.unload_model(fuzz.MODEL, headers={key: "guess"}), key)
        assert client.is_model_ready(fuzz.MODEL)
        http_refused(lambda: client.register_system_shared_memory("r", "/x", 64), key)
        http_refused(lambda: client.get_system_shared_memory_status(), key)
        http_refused(lambda: client.register_cuda_shared_memory("r", b"", 0, 64), key)
        assert client.get_system_shared_memory_status(headers={key: value}) == []
        client.unload_model(fuzz.MODEL, headers={key: value})  # explicit mode: allowed
        assert not client.is_model_ready(fuzz.MODEL)
        client.load_model(fuzz.MODEL, headers={key: value})
        assert client.is_model_ready(fuzz.MODEL)
        # the same unload without the header over gRPC: refused there too
        grpc_client = grpcclient.InferenceServerClient(served.address)
        assert refused(lambda: grpc_client.unload_model(fuzz.MODEL)) == "StatusCode.UNAVAILABLE"
        assert client.is_model_ready(fuzz.MODEL)
        assert "restricted model-repository 403" in served.log_text()


def test_bad_security_flags_stop_the_server(
    certs: Certificates, repo: Path, tmp_path: Path
) -> None:
    tls = ["--grpc-use-ssl", f"--grpc-server-cert={certs.server_cert}"]
    tls += [f"--grpc-server-key={certs.server_key}"]
    for flags, message in (
        (["--grpc-use-ssl"], "needs --grpc-server-cert"),
        (["--grpc-restricted-protocol=inference"], "expected <categories>:<key>=<value>"),
        (["--grpc-restricted-protocol=infer:k=v"], "unknown categories ['infer']"),
        (["--http-restricted-api=infer:k=v"], "--http-restricted-api: unknown categories"),
        # a side door: gRPC secured, HTTP open where gRPC is not
        (
            ["--grpc-restricted-protocol=model-repository,inference:k=v"],
            "gRPC restricts inference, model-repository but HTTP would not: add --allow-http "
            "false, or --http-restricted-api inference,model-repository:<key>=<value>",
        ),
        (
            [
                "--grpc-restricted-protocol=model-repository,inference:k=v",
                "--http-restricted-api=inference:k=v",
            ],
            "--http-restricted-api model-repository:<key>=<value>",
        ),
        (
            [*tls, "--http-address=0.0.0.0"],
            "gRPC is served over TLS but HTTP would be plaintext on 0.0.0.0: add --allow-http "
            "false, or --http-address 127.0.0.1 behind a TLS-terminating proxy",
        ),
    ):
        with argonic_serve(repo, tmp_path / "log", *flags) as served:
            assert served.process.wait(60) == 2
            assert message in served.log_text()
            assert len(served.log_text().strip().splitlines()) == 1


def test_secured_grpc_with_http_off_or_behind_a_proxy(
    certs: Certificates, repo: Path, tmp_path: Path
) -> None:
    """The two ways out the refusal names start: HTTP off (nothing listens on its port), or
    HTTP on loopback beside TLS gRPC (a TLS-terminating proxy in front reaches it)."""
    flags = ["--grpc-restricted-protocol=model-repository:k=v", "--allow-http=false"]
    with argonic_serve(repo, tmp_path / "off.log", *flags) as served:
        wait_serving(served)
        assert "HTTP on (off)" in served.log_text()
    tls = ["--grpc-use-ssl", f"--grpc-server-cert={certs.server_cert}"]
    tls += [f"--grpc-server-key={certs.server_key}", "--http-address=127.0.0.1"]
    with argonic_serve(repo, tmp_path / "proxy.log", *tls) as served:
        wait_serving(served, grpc.ssl_channel_credentials(certs.ca.read_bytes()))
        assert httpclient.InferenceServerClient(served.http_address).is_server_live()


def test_model_control_flags(repo: Path, tmp_path: Path) -> None:
    from argonic.server.core.dataplane import CONTROL_REFUSED

    flags = ["--model-control-mode=explicit", f"--load-model={fuzz.MODEL}"]
    with argonic_serve(repo, tmp_path / "explicit.log", *flags) as served:
        wait_serving(served)
        client = grpcclient.InferenceServerClient(served.address)
        assert client.is_model_ready(fuzz.MODEL) and not client.is_model_ready(fuzz.PLANE_MODEL)
        client.load_model(fuzz.PLANE_MODEL)
        assert client.is_model_ready(fuzz.PLANE_MODEL)
    with argonic_serve(repo, tmp_path / "none.log") as served:  # the default: none
        wait_serving(served)
        client = grpcclient.InferenceServerClient(served.address)
        with pytest.raises(InferenceServerException) as info:
            client.unload_model(fuzz.MODEL)
        assert (info.value.status(), info.value.message()) == (
            "StatusCode.UNAVAILABLE",
            CONTROL_REFUSED,
        )
        assert client.is_model_ready(fuzz.MODEL) and client.is_model_ready(fuzz.PLANE_MODEL)
