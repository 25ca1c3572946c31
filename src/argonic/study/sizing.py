"""Sizing a SONIC farm from the fitted latency model: clients per server, event time, servers needed."""

from __future__ import annotations

import math
from typing import Any

from argonic.settings.study import DEFAULT_FARMS, DEFAULT_SERVERS
from argonic.study.latency_model import LatencyModel


def servers_needed(model: LatencyModel, clients: int) -> int:
    """The fewest servers that keep ``clients`` simultaneous clients unsaturated (Eq. 3)."""
    return max(1, math.ceil(clients / model.optimal_ratio - 1e-9))


def sizing_report(
    model: LatencyModel,
    farms: tuple[int, ...] | list[int] = DEFAULT_FARMS,
    servers: tuple[int, ...] | list[int] = DEFAULT_SERVERS,
) -> dict[str, Any]:
    """Predicted event and module times for each farm size and server count (Eq. 4)."""
    rows = []
    for clients in farms:
        for k in sorted(set(servers) | {servers_needed(model, clients)}):
            ratio = clients / k
            t_event = float(model.t_sonic(ratio))
            rows.append(
                {
                    "clients": clients,
                    "servers": k,
                    "clients_per_server": ratio,
                    "saturated": bool(model.saturated(ratio)),
                    "t_event_s": t_event,
                    "t_module_s": float(model.t_module(ratio)),
                    "slowdown_vs_ideal": t_event / model.t_ideal,
                    "events_per_s": clients / t_event,
                }
            )
    return {
        "model": model.as_dict(),
        "optimal_clients_per_server": model.optimal_ratio,
        "servers_needed": {str(c): servers_needed(model, c) for c in farms},
        "rows": rows,
    }


def format_sizing(report: dict[str, Any]) -> str:
    """The report as a text table."""
    m = report["model"]
    lines = [
        (
            f"sizing from the fitted model: t_ideal {m['t_ideal']:.3g} s, t_gpu {m['t_gpu']:.3g} s/event, "
            f"optimal {report['optimal_clients_per_server']:.1f} clients per server"
        ),
        (
            f"{'clients':>8}{'servers':>8}{'per server':>11}{'event s':>10}{'module s':>10}"
            f"{'x ideal':>9}{'events/s':>10}  saturated"
        ),
    ]
    for r in report["rows"]:
        lines.append(
            f"{r['clients']:>8}{r['servers']:>8}{r['clients_per_server']:>11.1f}{r['t_event_s']:>10.3g}"
            f"{r['t_module_s']:>10.3g}{r['slowdown_vs_ideal']:>9.2f}{r['events_per_s']:>10.3g}"
            f"  {'yes' if r['saturated'] else 'no'}"
        )
    need = ", ".join(f"{c} clients: {k}" for c, k in report["servers_needed"].items())
    lines.append(f"servers needed to stay unsaturated: {need}")
    return "\n".join(lines)
