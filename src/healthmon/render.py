"""Plain text for the terminal: times, tables, small charts, the history report and a
fleet summary (a line per service)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from healthmon.store import ServiceReport, StatusCounts, WindowStats

__all__ = [
    "STATUS_LEGEND",
    "chart_bucket",
    "duration",
    "iso",
    "render_fleet",
    "render_report",
    "render_table",
    "sparkline",
    "status_mark",
    "status_strip",
]

_BARS = "▁▂▃▄▅▆▇█"
_ASCII_BARS = "_.-:=+*#"
# The status chart: one character a bucket, saying how much of it was down. A bucket
# with unhealthy results shows their share of its known results in tenths, rounded up
# (so one failure in a hundred still shows): 1-9, or X when all were unhealthy. Other
# buckets show their worst status. A space where there was no result.
STATUS_LEGEND = "_ healthy ~ degraded ? unknown 1-9 tenths unhealthy X all; blank: none"
# Bucket sizes a chart picks from: round numbers, and whole minutes and hours, which
# the store answers from its aggregates alone.
_NICE_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600,
                 7200, 10800, 21600, 43200, 86400)  # fmt: skip


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds, e.g. 2026-11-29T18:00:00.125Z."""
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def duration(seconds: float) -> str:
    """A short human duration: 0.3 s, 42 s, 5m12s, 3h04m, 2d03h."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def render_table(
    rows: Sequence[Sequence[str]], *, right: frozenset[int] = frozenset()
) -> list[str]:
    """Rows as aligned lines (columns two spaces apart; `right` ones right-aligned)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def chart_bucket(seconds: float, width: int = 60) -> float:
    """The smallest round bucket size that fits a window of `seconds` in `width` columns."""
    for bucket in _NICE_BUCKETS:
        if seconds / bucket <= width:
            return float(bucket)
    return float(math.ceil(seconds / width / 86400) * 86400)


def sparkline(values: Sequence[float | None], *, top: float, ascii: bool = False) -> str:
    """One character per value, its height scaled to `top`; a space for None."""
    bars = _ASCII_BARS if ascii else _BARS
    out = []
    for value in values:
        if value is None:
            out.append(" ")
        else:
            share = 0.0 if top <= 0 else min(1.0, value / top)
            out.append(bars[min(len(bars) - 1, int(share * len(bars)))])
    return "".join(out)


def status_strip(buckets: Sequence[WindowStats]) -> str:
    """One character per bucket, saying how much of it was down (see STATUS_LEGEND)."""
    return "".join(status_mark(bucket.counts) for bucket in buckets)


def status_mark(counts: StatusCounts) -> str:
    """A bucket's character: the share of its known results that were unhealthy, in
    tenths rounded up (1-9; X for all), else its worst status; a space for none."""
    known = counts.healthy + counts.degraded + counts.unhealthy
    if counts.unhealthy:
        if counts.unhealthy == known:
            return "X"
        return str(min(9, -(-counts.unhealthy * 10 // known)))  # integer ceil: exact
    if counts.degraded:
        return "~"
    if counts.unknown:
        return "?"
    return "_" if counts.healthy else " "


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.3f} %"


def render_report(
    report: ServiceReport,
    buckets: Sequence[WindowStats] = (),
    *,
    bucket: float | None = None,
    ascii: bool = False,
    max_incidents: int = 10,
) -> str:
    """A service's history report as text, with a latency and status chart when
    `buckets` (a series of `bucket` seconds) is given."""
    counts = report.counts
    latency = report.latency
    span = report.until - report.since
    lines = [
        f"{report.service_name}: {iso(report.since)} to {iso(report.until)} ({duration(span)})",
        f"  uptime     {_percent(report.uptime)} (healthy {_percent(report.healthy_share)}) "
        f"of {counts.total} checks: {counts.healthy} healthy, {counts.degraded} degraded, "
        f"{counts.unhealthy} unhealthy, {counts.unknown} unknown",
    ]
    if latency.count:
        precision = "exact" if latency.exact else "percentiles within 1 %"
        lines.append(
            f"  latency    p50 {_ms(latency.p50)}  p90 {_ms(latency.p90)}  "
            f"p95 {_ms(latency.p95)}  p99 {_ms(latency.p99)} ms  "
            f"(min {_ms(latency.min)}, mean {_ms(latency.mean)}, max {_ms(latency.max)}; "
            f"{latency.count} answered; {precision})"
        )
    else:
        lines.append("  latency    - (no answered checks)")
    incidents = report.incidents
    down = sum(incident.duration for incident in incidents)
    summary = f"  incidents  {len(incidents)}"
    if incidents:
        summary += f", {duration(down)} in all"
    if report.mttr is not None:
        summary += f"; MTTR {duration(report.mttr)}"
    if report.mtbf is not None:
        summary += f"; MTBF {duration(report.mtbf)}"
    lines.append(summary)
    shown = incidents[-max_incidents:]
    if len(incidents) > len(shown):
        lines.append(f"    ... {len(incidents) - len(shown)} earlier ones not shown")
    for incident in shown:
        end = f"to {iso(incident.end)}" if incident.end is not None else "ongoing"
        if incident.end is None and incident.start + incident.duration < report.until:
            end = "not seen to recover (the results stopped)"
        before = ", already open when observed" if incident.began_before else ""
        lines.append(
            f"    {iso(incident.start)} {end}, {duration(incident.duration)}, "
            f"{incident.worst_status.value}, {incident.checks} checks{before}"
        )
    if report.gaps:
        missing = sum(gap.duration for gap in report.gaps)
        lines.append(
            f"  gaps       {len(report.gaps)}, {duration(missing)} without results "
            "(the monitor was not checking)"
        )
    if buckets and bucket is not None:
        lines += _chart(buckets, bucket, ascii=ascii)
    return "\n".join(lines)


def render_fleet(
    services: Sequence[tuple[ServiceReport, Sequence[WindowStats]]], *, bucket: float
) -> list[str]:
    """One line per service: uptime, healthy share, checks, p95 latency, incidents (how
    many, how long in all) and its status chart over buckets of `bucket` seconds."""
    size = duration(bucket).replace(" ", "")
    width = max((len(buckets) for _, buckets in services), default=0)
    rows = [
        (
            "SERVICE",
            "UPTIME",
            "HEALTHY",
            "CHECKS",
            "P95 MS",
            "INCIDENTS",
            f"STATUS ({width} x {size})",
        )
    ]
    for report, buckets in services:
        incidents = report.incidents
        down = sum(incident.duration for incident in incidents)
        rows.append(
            (
                report.service_name,
                _percent(report.uptime),
                _percent(report.healthy_share),
                str(report.counts.total),
                _ms(report.latency.p95),
                f"{len(incidents)}, {duration(down)}" if incidents else "0",
                f"|{status_strip(buckets)}|",
            )
        )
    return render_table(rows, right=frozenset({1, 2, 3, 4}))


def _chart(buckets: Sequence[WindowStats], bucket: float, *, ascii: bool) -> list[str]:
    p95 = [b.latency.p95 for b in buckets]
    top = max((value for value in p95 if value is not None), default=0.0)
    size = duration(bucket).replace(" ", "")
    return [
        f"  p95 ms     |{sparkline(p95, top=top, ascii=ascii)}|  top {top:.1f} ms, "
        f"{len(buckets)} buckets of {size}",
        f"  status     |{status_strip(buckets)}|  {STATUS_LEGEND}",
    ]
