#!/usr/bin/env python3
"""A small renderer for the subset of Helm's Go templates that the argonic chart uses.

No helm binary is packaged for Debian 12 or on PyPI, and nothing can be downloaded from
elsewhere on the build machines, so the tests render the chart with this file instead:

    python deploy/helm/minihelm.py deploy/helm/argonic [-f values.yaml] [--set a.b=c] [--name r]

It implements Go text/template actions ``{{ }}`` with ``{{-``/``-}}`` trimming, comments,
``if / else if / else``, ``with``, ``range`` (lists and maps, with ``$i, $v :=``), ``define``
/ ``include`` / ``template``, variables (``$``, ``$x :=``), pipelines, parentheses, and the
Sprig/Helm functions listed in FUNCS.  Anything else is an error, never silently wrong
output: a template that uses more than this must be checked with a real ``helm template``.
The chart itself is a normal Helm chart; with helm installed, ``helm template`` and
``helm lint`` work on it unchanged.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml


class TemplateError(Exception):
    pass


# --- lexing -------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
  | (?P<assign>:=|=)
  | (?P<punct>[|(),])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
)""",
    re.VERBOSE,
)


def _lex(src: str) -> list[tuple]:
    """Split into ("text", s) and ("action", body) with trim markers applied to the text."""
    out: list[list] = []
    pos = 0
    for m in _ACTION.finditer(src):
        out.append(["text", src[pos : m.start()]])
        if m.group(1) and out[-1][0] == "text":
            out[-1][1] = out[-1][1].rstrip()
        body = m.group(2).strip()
        out.append(["action", body, bool(m.group(3))])
        pos = m.end()
    out.append(["text", src[pos:]])
    for i, item in enumerate(out):  # -}} trims the following text
        if item[0] == "action" and item[2] and i + 1 < len(out):
            out[i + 1][1] = out[i + 1][1].lstrip()
    return [(t[0], t[1]) for t in out if not (t[0] == "action" and t[1].startswith("/*"))]


def _tokens(body: str) -> list[tuple[str, str]]:
    toks, pos = [], 0
    body = body.rstrip()
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"cannot parse {body!r} at {body[pos:]!r}")
        kind = m.lastgroup
        toks.append((kind, m.group(kind)))
        pos = m.end()
    return toks


# --- parsing ------------------------------------------------------------------------------


def _parse(items: list[tuple], i: int = 0, stop: tuple[str, ...] = ()) -> tuple[list, int, str]:
    """Nodes until a keyword in ``stop`` (returned with its index)."""
    nodes: list = []
    while i < len(items):
        kind, body = items[i]
        if kind == "text":
            nodes.append(("text", body))
            i += 1
            continue
        word = body.split(None, 1)[0] if body else ""
        rest = body[len(word) :].strip()
        if word in stop:
            return nodes, i, body
        if word in ("if", "with"):
            branches = []
            cond = rest
            i += 1
            while True:
                block, i, end = _parse(items, i, ("else", "end"))
                branches.append((cond, block))
                if end == "end":
                    break
                after = end[len("else") :].strip()
                if after.startswith("if ") or (word == "with" and after.startswith("with ")):
                    cond = after.split(None, 1)[1]
                else:
                    cond = None  # plain else
                i += 1
            nodes.append((word, branches))
            i += 1
        elif word == "range":
            i += 1
            block, i, end = _parse(items, i, ("else", "end"))
            else_block: list = []
            if end != "end":
                else_block, i, end = _parse(items, i + 1, ("end",))
            nodes.append(("range", rest, block, else_block))
            i += 1
        elif word == "define":
            name = json.loads(rest)
            block, i, _ = _parse(items, i + 1, ("end",))
            nodes.append(("define", name, block))
            i += 1
        elif word in ("end", "else"):
            raise TemplateError(f"unexpected {{{{ {body} }}}}")
        else:
            nodes.append(("action", body))
            i += 1
    if stop:
        raise TemplateError(f"missing {{{{ end }}}} (looking for {stop})")
    return nodes, i, ""


# --- values and functions -----------------------------------------------------------------


def _truthy(v: Any) -> bool:
    """Go template truth: false, 0, nil and empty strings, lists and maps are false."""
    if v is None or isinstance(v, bool):
        return bool(v)
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, (str, list, dict, tuple)):
        return len(v) > 0
    return True


def _str(v: Any) -> str:
    if v is None:
        return ""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def _to_yaml(v: Any) -> str:
    if v is None:
        return "null"
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")


def _indent(n: int, s: str) -> str:
    return "\n".join((" " * n + line) if line else line for line in _str(s).split("\n"))


def _required(msg: str, v: Any) -> Any:
    if v is None or v == "":
        raise TemplateError(msg)
    return v


def _printf(fmt: str, *args: Any) -> str:
    return re.sub(r"%[vsdg]", "{}", fmt).format(*(_str(a) for a in args))


def _fail(msg: str) -> None:
    raise TemplateError(msg)


def _default(d: Any, v: Any = None) -> Any:
    return v if _truthy(v) else d


FUNCS: dict[str, Any] = {
    "default": _default,
    "quote": lambda *a: " ".join(json.dumps(_str(x)) for x in a),
    "squote": lambda v: f"'{_str(v)}'",
    "toYaml": _to_yaml,
    "toJson": lambda v: json.dumps(v, sort_keys=True),
    "nindent": lambda n, s: "\n" + _indent(n, s),
    "indent": _indent,
    "trunc": lambda n, s: _str(s)[:n],
    "trimSuffix": lambda suf, s: _str(s)[: -len(suf)] if suf and _str(s).endswith(suf) else _str(s),
    "lower": lambda s: _str(s).lower(),
    "upper": lambda s: _str(s).upper(),
    "replace": lambda old, new, s: _str(s).replace(old, new),
    "contains": lambda sub, s: sub in _str(s),
    "printf": _printf,
    "print": lambda *a: "".join(_str(x) for x in a),
    "toString": _str,
    "int": lambda v: int(float(v)) if v not in (None, "") else 0,
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "le": lambda a, b: a <= b,
    "not": lambda v: not _truthy(v),
    "empty": lambda v: not _truthy(v),
    "required": _required,
    "fail": _fail,
    "hasKey": lambda d, k: isinstance(d, dict) and k in d,
    "list": lambda *a: list(a),
    "dict": lambda *a: {a[i]: a[i + 1] for i in range(0, len(a), 2)},
    "mul": lambda a, b: a * b,
    "add": lambda a, b: a + b,
}


class _Renderer:
    def __init__(self, defines: dict[str, list]) -> None:
        self.defines = defines

    # expressions
    def pipeline(self, toks: list, dot: Any, scope: dict) -> Any:
        if len(toks) >= 2 and toks[0][0] == "var" and toks[1] == ("assign", ":="):
            value = self.pipeline(toks[2:], dot, scope)
            scope[toks[0][1]] = value
            return ""
        commands, depth, cur = [], 0, []
        for t in toks:
            if t == ("punct", "("):
                depth += 1
            elif t == ("punct", ")"):
                depth -= 1
            if t == ("punct", "|") and depth == 0:
                commands.append(cur)
                cur = []
            else:
                cur.append(t)
        commands.append(cur)
        value: Any = _NOARG
        for cmd in commands:
            value = self.command(cmd, dot, scope, value)
        return value

    def command(self, toks: list, dot: Any, scope: dict, piped: Any) -> Any:
        args = self.operands(toks, dot, scope)
        if not args:
            raise TemplateError("empty command")
        head, rest = args[0], args[1:]
        if isinstance(head, _Func):
            if piped is not _NOARG:
                rest = [*rest, piped]
            return head(self, dot, scope, rest)
        if rest or piped is not _NOARG:
            raise TemplateError(f"cannot call a non-function with arguments: {toks}")
        return head

    def operands(self, toks: list, dot: Any, scope: dict) -> list:
        out, i = [], 0
        while i < len(toks):
            kind, text = toks[i]
            if (kind, text) == ("punct", "("):
                depth, j = 1, i + 1
                while depth:
                    if toks[j] == ("punct", "("):
                        depth += 1
                    elif toks[j] == ("punct", ")"):
                        depth -= 1
                    j += 1
                out.append(self.pipeline(toks[i + 1 : j - 1], dot, scope))
                i = j
                continue
            if kind == "str":
                out.append(json.loads(text) if text[0] == '"' else text[1:-1])
            elif kind == "num":
                out.append(float(text) if "." in text else int(text))
            elif kind == "field":
                out.append(_lookup(dot, text))
            elif kind == "var":
                name, _, path = text.partition(".")
                if name not in scope:
                    raise TemplateError(f"undefined variable {name}")
                out.append(_lookup(scope[name], "." + path) if path else scope[name])
            elif kind == "ident":
                if text in ("true", "false", "nil"):
                    out.append({"true": True, "false": False, "nil": None}[text])
                elif text in ("include", "template"):
                    out.append(_Func(self.include))
                elif text in ("and", "or"):
                    out.append(_Func(_and if text == "and" else _or))
                elif text in FUNCS:
                    f = FUNCS[text]
                    out.append(_Func(lambda r, d, s, a, f=f: f(*a)))
                else:
                    raise TemplateError(f"function {text!r} is not supported by minihelm")
            else:
                raise TemplateError(f"unexpected token {text!r}")
            i += 1
        return out

    def include(self, _r: Any, _dot: Any, _scope: dict, args: list) -> str:
        name, ctx = args[0], args[1] if len(args) > 1 else None
        if name not in self.defines:
            raise TemplateError(f"no template named {name!r}")
        return self.render(self.defines[name], ctx, {"$": ctx})

    # nodes
    def render(self, nodes: list, dot: Any, scope: dict) -> str:
        out = []
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "action":
                value = self.pipeline(_tokens(node[1]), dot, scope)
                out.append("" if value is _NOARG else _str(value))
            elif kind in ("if", "with"):
                for cond, block in node[1]:
                    if cond is None:
                        out.append(self.render(block, dot, dict(scope)))
                        break
                    value = self.pipeline(_tokens(cond), dot, scope)
                    if _truthy(value):
                        out.append(
                            self.render(block, value if kind == "with" else dot, dict(scope))
                        )
                        break
            elif kind == "range":
                out.append(self.range(node, dot, scope))
            elif kind == "define":
                pass
        return "".join(out)

    def range(self, node: tuple, dot: Any, scope: dict) -> str:
        _, expr, block, else_block = node
        toks = _tokens(expr)
        names: list[str] = []
        if ("assign", ":=") in toks:
            k = toks.index(("assign", ":="))
            names = [t[1] for t in toks[:k] if t[0] == "var"]
            toks = toks[k + 1 :]
        seq = self.pipeline(toks, dot, scope)
        if isinstance(seq, dict):
            items = sorted(seq.items())
        elif isinstance(seq, (list, tuple)):
            items = list(enumerate(seq))
        elif isinstance(seq, int) and not isinstance(seq, bool):
            items = list(enumerate(range(seq)))
        elif seq is None:
            items = []
        else:
            raise TemplateError(f"cannot range over {seq!r}")
        if not items:
            return self.render(else_block, dot, dict(scope))
        out = []
        for key, value in items:
            inner = dict(scope)
            if len(names) == 1:
                inner[names[0]] = value
            elif len(names) == 2:
                inner[names[0]], inner[names[1]] = key, value
            out.append(self.render(block, value, inner))
        return "".join(out)


class _Func:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, r: Any, dot: Any, scope: dict, args: list) -> Any:
        return self.fn(r, dot, scope, args)


def _and(_r: Any, _d: Any, _s: dict, args: list) -> Any:
    for a in args:
        if not _truthy(a):
            return a
    return args[-1]


def _or(_r: Any, _d: Any, _s: dict, args: list) -> Any:
    for a in args:
        if _truthy(a):
            return a
    return args[-1]


_NOARG = object()


def _lookup(obj: Any, path: str) -> Any:
    if path == ".":
        return obj
    for part in path.strip(".").split("."):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif obj is None:
            return None
        else:
            obj = getattr(obj, part, None)
    return obj


# --- the chart ----------------------------------------------------------------------------


def merge(base: dict, over: dict) -> dict:
    """Helm's values merge: maps merge recursively, everything else is replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_value(values: dict, assignment: str) -> None:
    """``--set a.b=c`` with YAML typing of the value (true, 3, null, [a, b])."""
    key, sep, raw = assignment.partition("=")
    if not sep:
        raise TemplateError(f"--set needs KEY=VALUE, got {assignment!r}")
    node = values
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(raw) if raw else ""


def render_chart(
    chart_dir: str | Path,
    values: dict | None = None,
    release: str = "argonic",
    namespace: str = "default",
    notes: bool = False,
) -> dict[str, str]:
    """Render every template; returns {template path: text} (helpers omitted).

    ``notes``: render only NOTES.txt (what helm prints after an install) instead.
    """
    chart_dir = Path(chart_dir)
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    merged = merge(yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}, values or {})
    templates = sorted((chart_dir / "templates").rglob("*"))
    parsed, defines = {}, {}
    for path in templates:
        if not path.is_file() or path.suffix not in (".yaml", ".yml", ".tpl", ".txt"):
            continue
        nodes, _, _ = _parse(_lex(path.read_text()))
        parsed[path] = nodes
        for node in nodes:
            if node[0] == "define":
                defines[node[1]] = node[2]
    root = {
        "Values": merged,
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": True},
        "Chart": {
            "Name": chart["name"],
            "Version": chart["version"],
            "AppVersion": chart.get("appVersion", ""),
        },
        "Capabilities": {"KubeVersion": {"Version": "v1.30.0"}},
    }
    r = _Renderer(defines)
    out = {}
    for path, nodes in parsed.items():
        if path.name.startswith("_") or (path.suffix == ".txt") != notes:
            continue
        rel = f"{chart['name']}/{path.relative_to(chart_dir)}"
        try:
            out[rel] = r.render(nodes, root, {"$": root})
        except TemplateError as exc:
            raise TemplateError(f"{rel}: {exc}") from None
    return out


def manifests(rendered: dict[str, str]) -> list[dict]:
    """All non-empty YAML documents of a rendering, in template order."""
    docs = []
    for name, text in rendered.items():
        try:
            docs += [d for d in yaml.safe_load_all(text) if d]
        except yaml.YAMLError as exc:
            raise TemplateError(f"{name} does not render to valid YAML: {exc}\n{text}") from None
    return docs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("chart")
    p.add_argument("-f", "--values", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--name", default="argonic")
    p.add_argument("--namespace", default="default")
    a = p.parse_args(argv)
    values: dict = {}
    for f in a.values:
        values = merge(values, yaml.safe_load(Path(f).read_text()) or {})
    for s in a.set:
        set_value(values, s)
    try:
        rendered = render_chart(a.chart, values, a.name, a.namespace)
    except TemplateError as exc:
        print(f"minihelm: error: {exc}", file=sys.stderr)
        return 1
    for name, text in rendered.items():
        if text.strip():
            print(f"---\n# Source: {name}\n{text.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
