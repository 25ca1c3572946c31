"""Deployment files: the Helm chart, nginx template, Grafana dashboard, container and Slurm files.

The chart is rendered and linted by Helm's own engine (helm-python-sdk bundles it; no helm
binary, no cluster), its values checked against values.schema.json, and every rendered
manifest is validated offline against the Kubernetes OpenAPI schemas bundled in
kubernetes-validate (strict: unknown fields fail). The CRDs (KEDA ScaledObject,
ServiceMonitor) are validated against the JSON schemas in deploy/helm/schemas/. The
container arguments are parsed by argonic's own CLI parser, PromQL by Prometheus's promtool
and the nginx configuration by nginx -t.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import helm_python as helm  # helm-python-sdk (test extra): Helm v4's engine
import jsonschema
import kubernetes_validate
import pytest
import yaml  # PyYAML (test extra)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "argonic"
SUPERSONIC_QUERY = (
    "sum(rate(nv_inference_queue_duration_us[30s])) / "
    "(sum(rate(nv_inference_exec_count[30s]))*1000)"
)
K8S_VERSIONS = ["1.29.0", "1.33.0"]


def render_chart(
    values: dict | None = None,
    release: str = "release",
    namespace: str = "default",
    notes: bool = False,
) -> dict[str, str]:
    """``helm template``: template path -> rendered text (NOTES.txt only if ``notes``)."""
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values or {}, name=release, namespace=namespace)
    return {k: v for k, v in rendered.items() if k.endswith("/NOTES.txt") == notes}


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses duplicate keys (the API server's strict decoding does too)."""


def _no_duplicates(loader, node, deep=False):
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate keys {dup}", node.start_mark
        )
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def render(values: dict | None = None, **kw) -> list[dict]:
    rendered = render_chart(values, **kw)
    docs = []
    for text in rendered.values():
        docs += [d for d in yaml.load_all(text, Loader=_UniqueKeyLoader) if d]
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def deployment(docs: list[dict], component: str = "inference-server") -> dict:
    (dep,) = [
        d
        for d in by_kind(docs, "Deployment")
        if d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == component
    ]
    return dep


def server_container(docs: list[dict]) -> dict:
    (c,) = deployment(docs)["spec"]["template"]["spec"]["containers"]
    return c


CASES = {
    "defaults": {},
    "gpu-keda-proxy-monitor": {
        "gpu": 1,
        "gpuNodeSelector": {"nvidia.com/gpu.present": "true"},
        "autoscaling": {"enabled": True},
        "proxy": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True}},
    },
    "triton-pvc-hpa": {
        "server": "triton",
        "gpu": 2,
        "modelRepository": {"source": "pvc", "pvc": {"create": True}},
        "autoscaling": {
            "enabled": True,
            "kind": "hpa",
            "hpa": {"queueTimeMetric": "argonic_queue_time_ms"},
        },
    },
    "hostpath": {
        "modelRepository": {"source": "hostPath"},
        "replicas": 3,
        "env": [{"name": "OMP_NUM_THREADS", "value": "2"}],
    },
    "init-container": {
        "modelRepository": {"source": "init"},
        "argonic": {
            "settings": {
                "load_model": "emtrkmichelid",
                "http_address": "127.0.0.1",
                "saturation_threshold_ms": 100,
            }
        },
    },
    "secured": {
        "modelRepository": {"source": "hostPath"},
        "security": {
            "modelControlMode": "explicit",
            "tls": {"enabled": True, "secretName": "argonic-tls", "mutual": True},
            "restrictedProtocols": [
                {
                    "categories": "model-repository",
                    "header": "admin-key",
                    "secretName": "argonic-admin-key",
                    "secretKey": "key",
                },
                {
                    "categories": "inference,metadata,model-config,statistics",
                    "header": "authorization",
                    "secretName": "argonic-token",
                },
            ],
        },
        "limits": {"maxInflightBytes": 1 << 28},
    },
    "triton-existing-pvc": {
        "server": "triton",
        "modelRepository": {"source": "pvc", "pvc": {"existingClaim": "models"}},
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_chart_renders_to_valid_kubernetes_manifests(case):
    docs = render(CASES[case])
    assert by_kind(docs, "Deployment") and by_kind(docs, "Service")
    builtin = [d for d in docs if d["apiVersion"] in ("v1", "apps/v1", "autoscaling/v2")]
    crds = [d for d in docs if d not in builtin]
    for doc in builtin:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    schemas = {
        "ScaledObject": "keda-scaledobject.schema.json",
        "ServiceMonitor": "servicemonitor.schema.json",
    }
    for doc in crds:
        schema = json.loads((DEPLOY / "helm" / "schemas" / schemas[doc["kind"]]).read_text())
        jsonschema.validate(doc, schema)


def test_install_notes_name_the_client_endpoint():
    (notes,) = render_chart({}, release="sonic", namespace="lartpc", notes=True).values()
    assert "sonic-argonic.lartpc.svc.cluster.local:8001" in notes
    (notes,) = render_chart({"proxy": {"enabled": True}}, "sonic", "lartpc", notes=True).values()
    assert "sonic-argonic-proxy.lartpc.svc.cluster.local:8001" in notes


def test_validation_catches_a_broken_manifest():
    """The validators used above do reject what they should (a test that can fail)."""
    dep = deployment(render())
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSIONS[0], strict=True)
    (so,) = by_kind(render(CASES["gpu-keda-proxy-monitor"]), "ScaledObject")
    so["spec"]["triggers"][0]["metadata"]["ignoreNullValues"] = True  # must be a string
    schema = json.loads((DEPLOY / "helm" / "schemas" / "keda-scaledobject.schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(so, schema)
    with pytest.raises(helm.HelmValuesError, match="'/server': value must be one of"):
        render({"server": "tensorflow"})  # values.schema.json
    with pytest.raises(helm.HelmRenderError, match="Triton image holds no models"):
        render({"server": "triton"})  # the template's own check


@pytest.mark.parametrize("case", sorted(CASES))
def test_chart_lints_clean(case):
    report = helm.lint(str(CHART), CASES[case], strict=True, kube_version="v1.33.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # warnings or errors


@pytest.mark.parametrize(
    "values, where",
    [
        ({"replicas": "two"}, "/replicas': got string, want integer"),
        (
            {"proxy": {"maxRequestBytes": 1e6 + 0.5}},
            "/proxy/maxRequestBytes': got number, want integer",
        ),
        ({"modelRepository": {"source": "s3"}}, "/modelRepository/source': value must be one of"),
        ({"autoscaling": {"knd": "hpa"}}, "additional properties 'knd' not allowed"),
        ({"ports": {"grpc": 70000}}, "/ports/grpc': maximum"),
    ],
)
def test_values_schema_refuses_bad_values(values, where):
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
            chart.validate_schema(values)
        chart.validate_schema(CASES["gpu-keda-proxy-monitor"])


def test_minihelm_command_prints_what_helm_template_prints(capsys):
    """deploy/helm/minihelm.py (docs/operations.md's command) runs the same engine."""
    import runpy

    main = runpy.run_path(str(DEPLOY / "helm" / "minihelm.py"))["main"]
    assert main([str(CHART), "--set", "proxy.enabled=true", "--name", "sonic"]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert docs == render({"proxy": {"enabled": True}}, release="sonic", namespace="default")
    assert main([str(CHART), "--lint"]) == 0
    assert main([str(CHART), "--set", "replicas=-1"]) == 1
    assert "/replicas" in capsys.readouterr().err


def test_grafana_dashboard_ships_in_the_chart():
    shipped = (DEPLOY / "grafana" / "argonic.json").read_bytes()
    assert (CHART / "files" / "grafana-dashboard.json").read_bytes() == shipped  # one dashboard
    (cm,) = [c for c in by_kind(render(), "ConfigMap") if "argonic.json" in c["data"]]
    assert json.loads(cm["data"]["argonic.json"]) == json.loads(shipped)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    off = render({"grafana": {"dashboard": {"enabled": False}}})
    assert not [c for c in by_kind(off, "ConfigMap") if "argonic.json" in c["data"]]


def _argonic_parser():
    from argonic.cli import build_parser

    return build_parser()


def _serve_settings(args: list[str], container: dict | None = None):
    """The [server] settings `argonic serve ARGS` runs with, under the container's
    ARGONIC_SERVER__* environment."""
    from argonic.cli.serving import server_settings

    env = {e["name"]: e["value"] for e in (container or {}).get("env", []) if "value" in e}
    env = {k: v for k, v in env.items() if k.startswith("ARGONIC_SERVER__")}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        return server_settings(_argonic_parser().parse_args(["serve", *args]))


def test_argonic_container_command_is_accepted_by_argonic_serve():
    c = server_container(render())
    assert c["command"] == ["argonic", "serve"]
    args = _serve_settings(c["args"], c)
    assert args.grpc_port == 8001 and args.metrics_port == 8002
    assert args.model_repository == "/opt/argonic/models"  # baked into the image
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"] == {"port": ports["grpc"]}  # Kubernetes native gRPC health probe
    c = server_container(render(CASES["init-container"]))
    args = _serve_settings(c["args"], c)
    assert args.model_repository == "/models" and args.load_model == ["emtrkmichelid"]
    assert args.http_address == "127.0.0.1"  # the chart's settings map, as ARGONIC_SERVER__*
    assert args.saturation_threshold_ms == 100  # saturation-aware discovery (SuperSONIC)


def test_tracing_passes_tritons_trace_flags_to_either_server():
    """SuperSONIC's --trace-config set, the pod's name from the downward API."""
    from argonic.tracing import parse_trace_config

    values = {"tracing": {"enabled": True, "url": "sonic-opentelemetry-collector:4318/v1/traces"}}
    repository = {"source": "hostPath", "mountPath": "/models"}  # Triton's image has none
    for server in ("argonic", "triton"):
        c = server_container(render({**values, "server": server, "modelRepository": repository}))
        flags = [a for a in c["args"] if a.startswith("--trace-config=")]
        assert flags == [
            "--trace-config=mode=opentelemetry",
            "--trace-config=opentelemetry,url=sonic-opentelemetry-collector:4318/v1/traces",
            "--trace-config=opentelemetry,resource=pod_name=$(POD_NAME)",
            "--trace-config=rate=100",
            "--trace-config=level=TIMESTAMPS",
            "--trace-config=count=-1",
        ]
        env = {e["name"]: e for e in c["env"]}
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    args = _serve_settings(server_container(render(values))["args"])
    config = parse_trace_config(args.trace_config)
    assert config.on and config.rate == 100 and config.resource == {"pod_name": "$(POD_NAME)"}
    assert config.url == "http://sonic-opentelemetry-collector:4318/v1/traces"
    assert not [a for a in server_container(render())["args"] if "trace" in a]
    with pytest.raises(Exception, match="tracing.url"):
        render({"tracing": {"enabled": True}})


def test_gpu_requests_and_model_volumes():
    docs = render(CASES["triton-pvc-hpa"])
    c = server_container(docs)
    assert c["command"] == ["tritonserver"]
    assert "--model-repository=/models" in c["args"]
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 2
    pod = deployment(docs)["spec"]["template"]["spec"]
    (vol,) = pod["volumes"]
    (pvc,) = by_kind(docs, "PersistentVolumeClaim")
    assert vol["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert c["volumeMounts"] == [{"name": "models", "mountPath": "/models", "readOnly": True}]
    assert {t["key"] for t in pod["tolerations"]} == {"nvidia.com/gpu"}
    cpu = server_container(render())
    assert "nvidia.com/gpu" not in json.dumps(cpu["resources"])
    assert "volumes" not in deployment(render())["spec"]["template"]["spec"]
    init = deployment(render(CASES["init-container"]))["spec"]["template"]["spec"]
    assert init["volumes"] == [{"name": "models", "emptyDir": {}}]
    assert init["initContainers"][0]["volumeMounts"][0]["mountPath"] == "/models"


def test_service_selects_the_pods_and_names_their_ports():
    for case in CASES.values():
        docs = render(case)
        pod_labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
        port_names = {p["name"] for p in server_container(docs)["ports"]}
        for svc in by_kind(docs, "Service"):
            if svc["spec"]["selector"].get("app.kubernetes.io/component") == "proxy":
                continue
            assert svc["spec"]["selector"].items() <= pod_labels.items()
            assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names


def test_keda_scales_the_deployment_on_the_supersonic_query():
    docs = render(CASES["gpu-keda-proxy-monitor"])
    (so,) = by_kind(docs, "ScaledObject")
    dep = deployment(docs)
    assert "replicas" not in dep["spec"]  # the autoscaler owns it
    assert so["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": dep["metadata"]["name"],
    }
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert " ".join(trigger["metadata"]["query"].split()) == SUPERSONIC_QUERY
    # KEDA hands `behavior` to an autoscaling/v2 HPA: check it with the Kubernetes schema.
    behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": so["spec"]["scaleTargetRef"],
            "maxReplicas": 2,
            "behavior": behavior,
        },
    }
    kubernetes_validate.validate(hpa, K8S_VERSIONS[0], strict=True)
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    docs = render(CASES["triton-pvc-hpa"])
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    assert not by_kind(docs, "ScaledObject")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "External"]


def test_prometheus_scraping_configuration():
    docs = render(CASES["gpu-keda-proxy-monitor"])
    ann = deployment(docs)["spec"]["template"]["metadata"]["annotations"]
    assert ann == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8002",
        "prometheus.io/path": "/metrics",
    }
    (sm,) = by_kind(docs, "ServiceMonitor")
    scraped = [
        s
        for s in by_kind(docs, "Service")
        if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        and any(p["name"] == "metrics" for p in s["spec"]["ports"])
    ]
    assert len(scraped) == 1 and sm["spec"]["endpoints"][0]["port"] == "metrics"


def test_envoy_proxy_config_points_at_the_headless_service():
    docs = render(CASES["gpu-keda-proxy-monitor"], release="sonic", namespace="lartpc")
    (cm,) = [c for c in by_kind(docs, "ConfigMap") if "envoy.yaml" in c["data"]]
    envoy = yaml.load(cm["data"]["envoy.yaml"], Loader=_UniqueKeyLoader)
    (cluster,) = envoy["static_resources"]["clusters"]
    assert cluster["lb_policy"] == "LEAST_REQUEST" and cluster["type"] == "STRICT_DNS"
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    headless = [s for s in by_kind(docs, "Service") if s["spec"].get("clusterIP") == "None"]
    assert (
        address["socket_address"]["address"]
        == f"{headless[0]['metadata']['name']}.lartpc.svc.cluster.local"
    )
    route = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    retry = route["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["retry_policy"]
    assert "unavailable" in retry["retry_on"].split(",")
    # whole numbers stay whole (Helm reads YAML numbers as float64: 1.073741824e+09 without int64)
    limit = route["route_config"]["virtual_hosts"][0]["per_request_buffer_limit_bytes"]
    assert limit == cluster["per_connection_buffer_limit_bytes"] == 1073741824
    assert isinstance(limit, int) and isinstance(retry["num_retries"], int)
    proxy = deployment(docs, "proxy")
    assert (
        proxy["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
        == cm["metadata"]["name"]
    )


# --- nginx --------------------------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx not installed (Debian package nginx)"
)
def test_nginx_template_renders_to_a_config_nginx_accepts(tmp_path):
    from argonic.cluster import nginx_template, render_nginx_config

    conf = render_nginx_config(
        nginx_template(),
        tmp_path,
        "127.0.0.1:18001",
        ["127.0.0.1:19001", "127.0.0.1:19002", "127.0.0.1:19003"],
    )
    assert "grpc_pass grpc://argonic_replicas;" in conf and "least_conn;" in conf
    body = "\n".join(ln for ln in conf.splitlines() if not ln.lstrip().startswith("#"))
    assert body.count("max_fails=1 fail_timeout=5s;") == 3 and "@" not in body
    (tmp_path / "nginx.conf").write_text(conf)
    (tmp_path / "nginx-tmp").mkdir()
    cmd = [
        "nginx",
        "-t",
        "-p",
        str(tmp_path),
        "-e",
        str(tmp_path / "err.log"),
        "-c",
        str(tmp_path / "nginx.conf"),
    ]
    ok = subprocess.run(cmd, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    # A gRPC status is not an nginx retry condition: the brief's `unavailable` is refused.
    (tmp_path / "nginx.conf").write_text(
        conf.replace("error timeout non_idempotent", "error timeout unavailable")
    )
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode != 0 and 'invalid value "unavailable"' in bad.stderr


def test_nginx_template_is_one_file_shipped_as_package_data():
    """argonic cluster reads the template installed with the package; deploy/nginx/ links
    to that same file (no copy to drift), and pyproject.toml installs it."""
    from argonic.cluster import nginx_template, nginx_template_path

    shipped = nginx_template_path()
    assert shipped.parent == ROOT / "src" / "argonic" / "cluster"
    linked = DEPLOY / "nginx" / "argonic-grpc.conf.template"
    assert linked.is_symlink() and linked.resolve() == shipped.resolve()
    assert nginx_template() == shipped.read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"argonic.cluster" = ["{shipped.name}"]' in pyproject


# --- Grafana and PromQL -------------------------------------------------------------------


def dashboard_queries() -> list[str]:
    dash = json.loads((DEPLOY / "grafana" / "argonic.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_grafana_dashboard_shows_the_metrics_to_watch():
    dash = json.loads((DEPLOY / "grafana" / "argonic.json").read_text())
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for word in ("throughput", "queue time", "batch size", "cpu", "gpu"):
        assert word in titles
    queries = dashboard_queries()
    assert SUPERSONIC_QUERY in queries
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${datasource}"


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)"
)
def test_every_promql_expression_parses(tmp_path):
    """Dashboard and autoscaling queries are checked by Prometheus's own parser (promtool)."""
    exprs = [e.replace("$__rate_interval", "1m") for e in dashboard_queries()]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    exprs.append(" ".join(values["autoscaling"]["keda"]["query"].split()))
    rules = {
        "groups": [
            {
                "name": "argonic",
                "rules": [{"record": f"argonic:check{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    out = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (tmp_path / "bad.yml").write_text(
        yaml.safe_dump(
            {"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum(rate(x[30s])"}]}]}
        )
    )
    assert (
        subprocess.run(
            ["promtool", "check", "rules", str(tmp_path / "bad.yml")], capture_output=True
        ).returncode
        != 0
    )


# --- container file -----------------------------------------------------------------------


def _containerfile() -> tuple[str, list[list[str]]]:
    text = (DEPLOY / "Containerfile").read_text()
    lines = [ln for ln in re.sub(r"\\\n", " ", text).splitlines() if ln and not ln.startswith("#")]
    return text, [ln.split(None, 1) for ln in lines]


def test_containerfile_builds_from_the_package_and_runs_argonic_serve():
    text, instructions = _containerfile()
    assert instructions[0][0] == "FROM"
    for verb, arg in instructions:
        assert verb in {
            "FROM",
            "ARG",
            "ENV",
            "WORKDIR",
            "COPY",
            "RUN",
            "USER",
            "EXPOSE",
            "HEALTHCHECK",
            "STOPSIGNAL",
            "ENTRYPOINT",
            "CMD",
        }, verb
        if verb == "COPY":
            for src in arg.split()[:-1]:
                assert (ROOT / src).exists(), f"COPY source {src} missing from the repository"
    (install,) = [a for v, a in instructions if v == "RUN" and "pip install" in a]
    assert re.search(
        r"pip install .*\s\.\$\{EXTRAS:\+\[\$\{EXTRAS\}\]\}\s", install
    )  # this package
    # the GPU image swaps in onnxruntime-gpu (build arg); the wheel's model moves to imagePath
    assert 'pip install "${ONNXRUNTIME}"' in install and "ARG ONNXRUNTIME=onnxruntime" in text
    assert "share/argonic/models" in install
    entry = json.loads(dict(instructions)["ENTRYPOINT"])
    cmd = json.loads(dict(instructions)["CMD"])
    assert entry == ["argonic"]
    assert cmd[0] == "serve"
    args = _serve_settings(cmd[1:])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert args.model_repository == values["modelRepository"]["imagePath"]
    assert f"ARGONIC_MODEL_REPOSITORY={args.model_repository}" in dict(instructions)["ENV"]
    assert dict(instructions)["USER"] not in ("0", "root")
    exposed = {int(p) for p in dict(instructions)["EXPOSE"].split()}
    assert (
        exposed
        == {values["ports"]["grpc"], values["ports"]["metrics"], values["ports"]["http"]}
        == {args.grpc_port, args.metrics_port, args.http_port}
    )
    assert "STOPSIGNAL SIGTERM" in text
    # The build-context filter lets every COPY source through.
    allowed = (DEPLOY / "Containerfile.dockerignore").read_text().split()
    for verb, arg in instructions:
        if verb == "COPY":
            for src in arg.split()[:-1]:
                assert f"!{src}" in allowed or f"!{src}/" in allowed, src


def test_container_healthcheck_answers_for_a_serving_server_only(tmp_path):
    """The HEALTHCHECK command, run as written against a real server (port swapped)."""
    from support.models import identity_onnx
    from support.servers import IDENTITY_CONFIG, add_model

    from argonic.server import running_server

    _, instructions = _containerfile()
    check = json.loads(dict(instructions)["HEALTHCHECK"].split(" CMD ", 1)[1])
    assert check[:3] == ["argonic", "health", "127.0.0.1:8001"]  # grpc.health.v1

    def run(target: str) -> int:
        argv = [sys.executable, "-m", "argonic.cli", *check[1:]]
        return subprocess.run(
            [a.replace("127.0.0.1:8001", target) for a in argv], timeout=60
        ).returncode

    add_model(
        tmp_path,
        "identity",
        IDENTITY_CONFIG,
        versions={1: lambda d: identity_onnx(d / "model.onnx")},
    )
    with running_server(tmp_path, allow_metrics=False) as server:
        assert run(server.url) == 0
    assert run(server.url) == 1  # stopped: unhealthy


# --- Slurm --------------------------------------------------------------------------------

SLURM_SCRIPTS = sorted((DEPLOY / "slurm").glob("*.sbatch")) + [DEPLOY / "slurm" / "submit.sh"]


@pytest.mark.parametrize("script", SLURM_SCRIPTS, ids=lambda p: p.name)
def test_slurm_scripts_are_valid_bash(script):
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    if script.suffix == ".sbatch":
        directives = [ln for ln in script.read_text().splitlines() if ln.startswith("#SBATCH")]
        assert directives and all(re.match(r"#SBATCH --[a-z-]+(=\S+)?$", d) for d in directives), (
            directives
        )


def test_slurm_client_finds_the_published_servers(tmp_path):
    """Run the client script without Slurm: it must find the servers and build --server args."""
    shared = tmp_path / "shared"
    (shared / "servers").mkdir(parents=True)
    (shared / "servers" / "101").write_text("gpu1:8001\n")
    (shared / "servers" / "102").write_text("gpu2:8001\n")
    (shared / "servers" / "103.tmp").write_text("half-written:8001\n")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "argonic").write_text('#!/bin/sh\necho "ARGS $*"\n')  # records the command line
    (fake_bin / "argonic").chmod(0o755)
    env = {
        "PATH": f"{fake_bin}:/usr/bin:/bin",
        "ARGONIC_SHARED": str(shared),
        "ARGONIC_EVENTS": "/data/ev-%a.h5",
        "SLURM_ARRAY_TASK_ID": "3",
    }
    out = subprocess.run(
        ["bash", str(DEPLOY / "slurm" / "argonic-clients.sbatch")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("ARGS ")]
    assert line == (
        f"ARGS reco /data/ev-3.h5 -o {shared}/output/reco-3.h5 --interface remote "
        "--server gpu2:8001 --server gpu1:8001"
    )
    args = _argonic_parser().parse_args(line.split()[1:])
    assert args.server == ["gpu2:8001", "gpu1:8001"] and args.interface == "remote"


# --- the chart's Triton container against a real Triton -----------------------------------


def _tritonserver() -> Path | None:
    """The tritonserver binary bundled with nvidia-pytriton, in this interpreter or in
    $ARGONIC_PYTRITON_PYTHON's (a separate numpy<2 environment, see .ci/run)."""
    python = os.environ.get("ARGONIC_PYTRITON_PYTHON", sys.executable)
    found = subprocess.run(
        [python, "-c", "import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parent)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if found.returncode:
        return None
    binary = Path(found.stdout.strip()) / "tritonserver" / "bin" / "tritonserver"
    return binary if binary.is_file() else None


@pytest.mark.skipif(_tritonserver() is None, reason="needs nvidia-pytriton (bundles tritonserver)")
def test_real_triton_accepts_the_charts_arguments_and_answers_its_grpc_probe(tmp_path):
    """server: triton: NVIDIA's tritonserver takes the rendered args, and the Kubernetes gRPC
    probe's call (grpc.health.v1.Health/Check on the gRPC port) answers SERVING."""
    import sysconfig
    import time
    import urllib.error
    import urllib.request

    from argonic.cluster import health_check
    from argonic.procs import free_port_block

    base = free_port_block(3)
    values = {
        "server": "triton",
        "ports": {"http": base, "grpc": base + 1, "metrics": base + 2},
        "modelRepository": {"source": "hostPath", "mountPath": str(tmp_path)},
        # PyTriton's tritonserver has only the Python backend, so it cannot load the
        # shipped ONNX model: start it on an empty repository, loading nothing
        "triton": {"loadModels": []},
        # the same --trace-config flags as argonic's (OpenTelemetry mode, SuperSONIC's set)
        "tracing": {"enabled": True, "url": f"127.0.0.1:{base}/v1/traces"},
    }
    c = server_container(render(values))
    probe_port = c["readinessProbe"]["grpc"]["port"]
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": sysconfig.get_config_var("LIBDIR") or ""}
    proc = subprocess.Popen(
        [str(_tritonserver()), *c["args"]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not health_check(f"127.0.0.1:{probe_port}", timeout_s=0.5):
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "Triton never answered SERVING"
            time.sleep(0.1)
        port = {p["name"]: p["containerPort"] for p in c["ports"]}["metrics"]
        while True:  # Triton opens its metrics port a little after gRPC answers
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                    assert "nv_cpu_utilization" in r.read().decode()
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline + 30, "Triton's metrics port never opened"
                time.sleep(0.2)
    finally:
        proc.terminate()  # SIGTERM: Triton drains (--exit-timeout-secs from the chart)
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_secured_chart_mounts_the_tls_and_key_secrets_and_passes_tritons_flags():
    docs = render(CASES["secured"])
    c = server_container(docs)
    args = _serve_settings(c["args"], c)
    assert args.grpc_use_ssl and args.grpc_use_ssl_mutual
    assert args.grpc_server_cert == "/etc/argonic/tls/tls.crt"
    assert args.grpc_root_cert == "/etc/argonic/tls/ca.crt"
    assert args.model_control_mode == "explicit" and args.max_inflight_bytes == 1 << 28
    assert args.grpc_restricted_protocol == [
        "model-repository:admin-key=$(ARGONIC_RESTRICTED_KEY_0)",
        "inference,metadata,model-config,statistics:authorization=$(ARGONIC_RESTRICTED_KEY_1)",
    ]
    env = {e["name"]: e for e in c["env"]}
    assert env["ARGONIC_RESTRICTED_KEY_0"]["valueFrom"]["secretKeyRef"] == {
        "name": "argonic-admin-key",
        "key": "key",
    }
    assert env["ARGONIC_RESTRICTED_KEY_1"]["valueFrom"]["secretKeyRef"]["name"] == "argonic-token"
    volumes = {v["name"]: v for v in deployment(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "argonic-tls" and "models" in volumes
    assert {"name": "tls", "mountPath": "/etc/argonic/tls", "readOnly": True} in c["volumeMounts"]
    assert "tcpSocket" in c["readinessProbe"]  # the kubelet's gRPC probes speak no TLS
    triton = server_container(render({**CASES["secured"], "server": "triton"}))
    assert "--grpc-use-ssl-mutual=true" in triton["args"] and "--allow-http=false" in triton["args"]
    assert (
        "--grpc-restricted-protocol=model-repository:admin-key=$(ARGONIC_RESTRICTED_KEY_0)"
        in (triton["args"])
    )


def _http_exposure_of(args) -> None:
    """argonic serve's own side-door rule on a container's parsed flags (SecurityError)."""
    from argonic.server.grpc.security import check_http_exposure, parse_restriction

    check_http_exposure(
        object() if args.grpc_use_ssl or args.grpc_use_ssl_mutual else None,
        [parse_restriction(r) for r in args.grpc_restricted_protocol],
        (args.http_address or args.host) if args.allow_http else None,
        [parse_restriction(r, "--http-restricted-api") for r in args.http_restricted_api],
    )


def test_secured_charts_leave_no_http_side_door():
    """TLS: HTTP off and no http port on the container; restricted protocols alone: HTTP
    restricted the same way. argonic serve's own check accepts both renderings (it refused
    the chart's earlier `--http-port=8000 --host=0.0.0.0` beside mutual TLS)."""
    from argonic.server.grpc.security import SecurityError

    secured = server_container(render(CASES["secured"]))
    args = _serve_settings(secured["args"], secured)
    assert args.allow_http is False and not args.http_restricted_api
    assert "http" not in {p["name"] for p in secured["ports"]}
    _http_exposure_of(args)
    restricted_only = {
        **CASES["secured"],
        "security": {**CASES["secured"]["security"], "tls": {"enabled": False}},
    }
    for server in ("argonic", "triton"):
        c = server_container(render({**restricted_only, "server": server}))
        assert "--http-port=8000" in c["args"] and "--allow-http=false" not in c["args"]
        restricted = [a for a in c["args"] if a.startswith("--grpc-restricted-protocol=")]
        assert [a for a in c["args"] if a.startswith("--http-restricted-api=")] == [
            a.replace("--grpc-restricted-protocol=", "--http-restricted-api=") for a in restricted
        ]
    args = _serve_settings(server_container(render(restricted_only))["args"])
    _http_exposure_of(args)
    args.http_restricted_api = []  # the chart as it was: refused
    with pytest.raises(SecurityError, match="HTTP would not"):
        _http_exposure_of(args)


def test_default_chart_is_safe_by_default():
    args = _serve_settings(server_container(render())["args"])
    assert args.model_control_mode == "none" and args.max_inflight_bytes == 128 << 20
