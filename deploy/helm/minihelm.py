#!/usr/bin/env python3
"""``helm template`` / ``helm lint`` without a helm binary: Helm v4's own engine, as bundled
by the PyPI package helm-python-sdk (``pip install helm-python-sdk``, in the test extra).

    python deploy/helm/minihelm.py deploy/helm/argonic [-f values.yaml] [--set a.b=c] [--name r]
    python deploy/helm/minihelm.py deploy/helm/argonic --lint [--set ...]

The output is what ``helm template`` prints (values checked against values.schema.json);
the name stays for the commands in docs/operations.md. The tests call the same engine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _merge(into: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def main(argv: list[str] | None = None) -> int:
    import helm_python as helm

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("chart")
    p.add_argument("-f", "--values", action="append", default=[], help="values file (repeatable)")
    p.add_argument("--set", action="append", default=[], help="a.b=c (repeatable)")
    p.add_argument("--name", default="argonic", help="release name")
    p.add_argument("--namespace", default="default")
    p.add_argument("--lint", action="store_true", help="lint (strict) instead of rendering")
    a = p.parse_args(argv)
    values: dict[str, Any] = {}
    for path in a.values:
        _merge(values, helm.values_from_yaml(Path(path).read_text()))
    for expression in a.set:
        _merge(values, helm.parse_set_string(expression))
    try:
        if a.lint:
            report = helm.lint(a.chart, values, strict=True)
            for m in report["messages"]:
                print(
                    f"[{('', 'INFO', 'WARNING', 'ERROR')[m['severity']]}] {m['path']}: {m['error']}"
                )
            return 1 if report["errors"] else 0
        with helm.Chart.load(a.chart) as chart:
            rendered = chart.render(values, name=a.name, namespace=a.namespace)
    except helm.HelmError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    for path, text in sorted(rendered.items()):
        if text.strip() and not path.endswith("NOTES.txt"):
            print(f"---\n# Source: {path}\n{text.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
