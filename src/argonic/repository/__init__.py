"""The model repository (Triton's layout), without the training stack.

Where the shipped repository is, the ModelConfig of the network, checksums, and the
network's signature (input and output names, patch size): everything the client, the
server and the reco chain need to know about the model, importable without torch.
``model_config`` holds Triton's config.pbtxt semantics and ``reader`` the one reader of a
repository on disk (models, versions, model files, their checksums), used by the server,
the client's identity check and local inference alike.

Layout::

    <repository>/emtrkmichelid/config.pbtxt          ModelConfig (text format)
    <repository>/emtrkmichelid/1/model.onnx          dynamic batch axis, opset 17
    <repository>/emtrkmichelid/1/model.onnx.sha256   "<hex>  model.onnx" (sha256sum format)
"""

from __future__ import annotations

import hashlib
import os
import site
import sys
import sysconfig
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from argonic import ArgonicError
from argonic._util import atomic_output

MODEL_NAME = "emtrkmichelid"
INPUT_NAME = "main_input"
OUTPUT_NAMES = ("em_trk_none_netout", "michel_netout")
PATCH_SIZE = 48  # PointIdAlg: 48 wires x 48 (downsampled) ticks
MAX_BATCH_SIZE = 4096
MAX_QUEUE_DELAY_US = 100
REPOSITORY_ENV = "ARGONIC_MODEL_REPOSITORY"
# a source checkout (editable install) has the repository at <checkout>/models; the wheel
# installs it as data files at <prefix>/share/argonic/models (pyproject.toml data-files)
CHECKOUT_REPOSITORY = Path(__file__).resolve().parents[3] / "models"
INSTALLED_PATH = Path("share", "argonic", "models")


def installed_repositories() -> list[Path]:
    """Where an installed wheel puts the model repository: this environment's data prefix,
    then the user's (``pip install --user``)."""
    roots = [sysconfig.get_path("data"), sys.prefix, site.getuserbase()]
    return list(dict.fromkeys(Path(r) / INSTALLED_PATH for r in roots if r))


class ModelRepositoryError(ArgonicError):
    """The model repository or a model file in it is missing or inconsistent."""


def shipped_repository() -> Path:
    """The model repository shipped with argonic.

    ``$ARGONIC_MODEL_REPOSITORY`` if set, else the ``models/`` folder of the source
    checkout this package runs from (editable install), else the copy the wheel installed.
    """
    env = os.environ.get(REPOSITORY_ENV)
    if env:
        path = Path(env)
        if not path.is_dir():
            raise ModelRepositoryError(f"${REPOSITORY_ENV} = {env!r} is not a folder")
        return path
    candidates = [CHECKOUT_REPOSITORY, *installed_repositories()]
    for path in candidates:
        if (path / MODEL_NAME / "config.pbtxt").is_file():
            return path
    raise ModelRepositoryError(
        f"no model repository found: set ${REPOSITORY_ENV} to a folder holding "
        f"{MODEL_NAME}/config.pbtxt (looked in {', '.join(map(str, candidates))})"
    )


def onnx_path(repository: str | os.PathLike[str] | None = None, version: int = 1) -> Path:
    """Path of ``emtrkmichelid/<version>/model.onnx`` in ``repository`` (default: shipped)."""
    root = Path(repository) if repository is not None else shipped_repository()
    return root / MODEL_NAME / str(version) / "model.onnx"


# --- ModelConfig ----------------------------------------------------------------------------


def network_config(
    platform: str = "onnxruntime_onnx",
    kind: str = "KIND_CPU",
    instances: int = 1,
    name: str = MODEL_NAME,
) -> Any:
    """The ModelConfig message (tritonclient's model_config_pb2) of the network."""
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name=name, platform=platform, max_batch_size=MAX_BATCH_SIZE)
    config.input.add(name=INPUT_NAME, data_type=mc.TYPE_FP32, dims=[PATCH_SIZE, PATCH_SIZE, 1])
    config.output.add(name=OUTPUT_NAMES[0], data_type=mc.TYPE_FP32, dims=[3])
    config.output.add(name=OUTPUT_NAMES[1], data_type=mc.TYPE_FP32, dims=[1])
    config.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    config.instance_group.add(count=instances, kind=mc.ModelInstanceGroup.Kind.Value(kind))
    # the server measures the fastest execution size on its own hardware at load
    config.parameters["execution_batch_size"].string_value = "auto"
    return config


def read_config(model_dir: str | os.PathLike[str]) -> Any:
    """Parse ``<model_dir>/config.pbtxt`` into a ModelConfig (see ``model_config.load_config``)."""
    from argonic.repository.model_config import load_config

    return load_config(Path(model_dir))


def write_config(model_dir: str | os.PathLike[str], config: Any) -> Path:
    """Write ``config`` as ``<model_dir>/config.pbtxt``."""
    path = Path(model_dir) / "config.pbtxt"
    write_bytes(path, text_format.MessageToString(config).encode())
    return path


# --- files and checksums --------------------------------------------------------------------


def sha256_hex(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(model_file: str | os.PathLike[str]) -> str:
    """The sha256 of ``model_file``, checked against its ``.sha256`` file when that exists.

    The repository's one checksum rule. Every model argonic writes has a ``.sha256``
    (``write_model_file``), so its own models are always checked; a Triton repository made
    by other tools has none, and the server must still serve it (the digest is then
    computed and published, so a client can still compare it). A ``.sha256`` that does not
    match refuses the model, wherever it is read: server, client or local inference.
    """
    model_file = Path(model_file)
    if not model_file.is_file():
        raise ModelRepositoryError(f"model file {model_file} does not exist")
    actual = sha256_hex(model_file)
    expected = expected_sha256(model_file)
    if expected is not None and actual != expected:
        raise ModelRepositoryError(
            f"{model_file} has sha256 {actual}, but {model_file.name}.sha256 says "
            f"{expected or '(empty)'}: refusing the wrong model"
        )
    return actual


def expected_sha256(model_file: str | os.PathLike[str]) -> str | None:
    """The digest in ``<model_file>.sha256`` (sha256sum format), or None without that file."""
    sums = Path(f"{model_file}.sha256")
    if not sums.is_file():
        return None
    try:
        words = sums.read_text().split()
    except OSError as exc:
        raise ModelRepositoryError(f"cannot read checksum file {sums}: {exc}") from exc
    return words[0].lower() if words else ""


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def write_model_file(model_file: Path, data: bytes) -> str:
    """Write a model file and its sha256sum-format checksum file; return the digest."""
    write_bytes(model_file, data)
    digest = hashlib.sha256(data).hexdigest()
    write_bytes(
        model_file.with_name(model_file.name + ".sha256"), f"{digest}  {model_file.name}\n".encode()
    )
    return digest
