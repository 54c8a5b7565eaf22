"""Small line charts drawn on the server as inline SVG (no script, no CDN, readable without JS)."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 320, 120, 44, 8, 10, 22


def line_chart(
    title: str, unit: str, times: Sequence[float], values: Sequence[float], colour: str = "#1d4ed8"
) -> str:
    """An SVG chart of ``values`` over ``times`` (wall seconds) with min/max and time-span labels.

    The ``aria-label`` says the same in words, so the chart is not an image-only fact.
    """
    t = html.escape(title)
    if not values:
        return (
            f'<figure class="chart"><figcaption>{t}</figcaption><p class="muted">No samples yet.</p></figure>'
        )
    # samples come in the order they were taken; a wall clock that jumped must not draw loops
    pairs = sorted(zip(times, values, strict=True))
    times, values = [t for t, _ in pairs], [v for _, v in pairs]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    t0, t1 = times[0], times[-1]
    span = max(t1 - t0, 1e-9)
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def xy(tt: float, v: float) -> str:
        x = PAD_L + (tt - t0) / span * pw if len(times) > 1 else PAD_L + pw / 2
        y = PAD_T + (hi - v) / (hi - lo) * ph
        return f"{x:.1f},{y:.1f}"

    points = " ".join(xy(tt, v) for tt, v in zip(times, values, strict=True))
    minutes = (t1 - t0) / 60
    ago = (time.time() - t1) / 60
    label = (
        f"{title}: {len(values)} samples over {minutes:.0f} min, from {min(values):.2f} to "
        f"{max(values):.2f} {unit}, latest {values[-1]:.2f} {unit}, {ago:.0f} min ago"
    )
    return (
        f'<figure class="chart"><figcaption>{t} ({html.escape(unit)})</figcaption>'
        f'<svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{html.escape(label)}">'
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}" fill="#f8fafc" stroke="#cbd5e1"/>'
        f'<text x="{PAD_L - 4}" y="{PAD_T + 8}" text-anchor="end" font-size="10" fill="#1f2937">{hi:.2f}</text>'
        f'<text x="{PAD_L - 4}" y="{PAD_T + ph}" text-anchor="end" font-size="10" fill="#1f2937">{lo:.2f}</text>'
        f'<text x="{PAD_L}" y="{H - 6}" font-size="10" fill="#1f2937">-{minutes + ago:.0f} min</text>'
        f'<text x="{W - PAD_R}" y="{H - 6}" text-anchor="end" font-size="10" fill="#1f2937">'
        f"{'now' if ago < 1 else f'-{ago:.0f} min'}</text>"
        f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
        + (
            f'<circle cx="{points.split(",")[0]}" cy="{points.split(",")[1]}" r="4" fill="{colour}"/>'
            if len(values) == 1
            else ""
        )
        + "</svg></figure>"
    )


def telemetry_charts(samples: Sequence[object]) -> str:
    """Voltage, current, temperature and SoC charts of one battery's samples (oldest first)."""
    times = [s.at_wall for s in samples]  # type: ignore[attr-defined]
    return "".join(
        line_chart(title, unit, times, [float(getattr(s, attr)) for s in samples], colour)
        for title, unit, attr, colour in (
            ("Voltage", "V", "voltage_v", "#1d4ed8"),
            ("Current", "A", "current_a", "#047857"),
            ("Temperature", "°C", "temp_c", "#b91c1c"),
            ("State of charge", "%", "soc", "#6d28d9"),
        )
    )
