"""Monitoring-plugin performance data for `check`: what Nagios, Icinga and check_mk draw graphs from.

The plugin guidelines' format, after a `|` on the first line of output, space-separated:
``'label'=value[UOM];[warn];[crit];[min];[max]``. A value that was not measured is ``U``
(a latency call that did not go out, an unreadable cache dir), never a made-up 0.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

from ..config import Config
from ..kinds import Severity
from ..model import Finding, Observation
from .figures import probe_states


def _item(
    label: str, value: Optional[float], uom: str = "", warn: str = "", crit: str = "", low: str = "0", high: str = ""
) -> str:
    shown = (
        "U" if value is None else (f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value))
    )
    return f"'{label}'={shown}{uom if value is not None else ''};{warn};{crit};{low};{high}"


def perfdata(findings: Sequence[Finding], obs: Observation, config: Config, scan_seconds: float) -> str:
    """The performance data of one scan (see the module's docstring).

    >>> from watchdogd.model import LatencyResult
    >>> obs = Observation(taken_wall=0.0, cache_entries=("a.xml",), latency=LatencyResult(True, True, domcaps_ms=4.0))
    >>> print(perfdata([], obs, Config(), 0.0021).replace(" ", "\\n"))
    'domcaps_latency'=4ms;5000;30000;0;
    'probes_running'=0;;;0;
    'probes_hung'=0;;;0;
    'probes_stale'=0;;;0;
    'cache_entries'=1;;;0;
    'findings_critical'=0;;;0;
    'findings_warning'=0;;;0;
    'findings_info'=0;;;0;
    'scan_duration'=0.002s;;;0;
    """
    lat = obs.latency
    latency_ms: Optional[float] = None
    if lat is not None and lat.answered and lat.domcaps_ms is not None:
        latency_ms = float(lat.domcaps_ms)
    elif lat is not None and lat.timed_out:
        latency_ms = config.latency.timeout * 1000.0  # it took at least the timeout: graphed at the critical line
    slow, timeout = f"{config.latency.slow * 1000:g}", f"{config.latency.timeout * 1000:g}"
    items: List[str] = [
        _item("domcaps_latency", latency_ms if latency_ms is None else round(latency_ms, 3), "ms", slow, timeout)
    ]
    states = probe_states(obs, config.detect)
    items += [_item(f"probes_{state}", states[state]) for state in ("running", "hung", "stale")]
    items.append(_item("cache_entries", len(obs.cache_entries) if obs.cache_entries is not None else None))
    for severity in (Severity.CRITICAL, Severity.WARNING, Severity.INFO):
        items.append(_item(f"findings_{severity.label}", sum(1 for f in findings if f.severity == severity)))
    items.append(_item("scan_duration", round(scan_seconds, 3), "s"))
    return " ".join(items)
