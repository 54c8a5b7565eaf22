"""Browser helpers every test area may import (a plain module, no fixtures): the flags of Debian's
Chromium under Playwright, the in-page accessibility checks, axe-core from the npm registry.

``tests/web`` (the kiosk and technician pages) and ``tests/renter`` (the renter app) both use
them; their conftests define the ``browser`` and ``axe`` fixtures on top.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


#: Runs in the page: problems a renter or a technician would meet (names, sizes, contrast, overflow).
A11Y_JS = """
(opts) => {
  const out = {unnamed: [], small: [], lowContrast: [], overflow: [], scroll: null};
  const visible = (el) => { const r = el.getBoundingClientRect(); const cs = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' && cs.display !== 'none' && !el.closest('[hidden]'); };
  const nameOf = (el) => (el.getAttribute('aria-label') || el.innerText || el.value || el.title ||
    (el.labels && el.labels[0] && el.labels[0].innerText) ||
    (el.getAttribute('aria-labelledby') && document.getElementById(el.getAttribute('aria-labelledby'))?.innerText) || '').trim();
  for (const el of document.querySelectorAll(opts.targets)) {
    if (!visible(el)) continue;
    if (!nameOf(el)) out.unnamed.push(el.outerHTML.slice(0, 80));
    const r = el.getBoundingClientRect();
    if (r.width < 48 || r.height < 48) out.small.push([el.outerHTML.slice(0, 60), Math.round(r.width), Math.round(r.height)]);
  }
  const rgb = (c) => { const m = c.match(/[\\d.]+/g).map(Number); return {r: m[0], g: m[1], b: m[2], a: m.length > 3 ? m[3] : 1}; };
  const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const bgOf = (el) => { for (let e = el; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.a > 0.5) return c; } return {r: 255, g: 255, b: 255, a: 1}; };
  for (const el of document.querySelectorAll(opts.texts)) {
    if (!visible(el) || !el.innerText.trim()) continue;
    const fg = rgb(getComputedStyle(el).color), bg = bgOf(el);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    if (ratio < 4.5) out.lowContrast.push([el.tagName + '#' + el.id + ' ' + el.innerText.slice(0, 30), ratio.toFixed(2)]);
  }
  if (opts.fit) {
    const se = document.scrollingElement;
    out.scroll = [se.scrollWidth - innerWidth, se.scrollHeight - innerHeight];
    for (const el of document.querySelectorAll('body *')) {
      if (!visible(el) || el.closest('svg')) continue;
      const r = el.getBoundingClientRect();
      if (r.right > innerWidth + 1 || r.bottom > innerHeight + 1 || r.left < -1 || r.top < -1)
        out.overflow.push([el.tagName + '#' + el.id + '.' + el.className, Math.round(r.right), Math.round(r.bottom)]);
    }
  }
  return out;
}
"""


async def a11y_problems(page: Any, opts: dict[str, Any]) -> dict[str, Any]:
    out = await page.evaluate(A11Y_JS, opts)
    problems = {k: v for k, v in out.items() if v and k != "scroll"}
    if opts["fit"] and (out["scroll"][0] > 0 or out["scroll"][1] > 0):
        problems["scroll"] = out["scroll"]
    return problems


AXE_VERSION = "4"  # axe-core major version from the npm registry
AXE_CACHE = Path(os.environ.get("CABINET_AXE_DIR") or Path.home() / ".cache" / "cabinet-tests" / "axe")


def axe_source() -> str | None:
    """axe-core's browser bundle: from CABINET_AXE_DIR or the cache, installed there with npm if missing."""
    js = npm_package(AXE_CACHE, f"axe-core@{AXE_VERSION}", "axe-core/axe.min.js")
    return js.read_text() if js is not None else None


async def axe_violations(page: Any, axe: str) -> list[str]:
    """Serious and critical axe-core violations on the page (injected through DevTools, not the page's CSP)."""
    await page.evaluate(axe)
    result = await page.evaluate(
        "async () => { const r = await axe.run(document, {resultTypes: ['violations']});"
        " return r.violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))})); }"
    )
    return [
        f"{v['id']} ({v['impact']}): {v['nodes'][:3]}"
        for v in result
        if v["impact"] in ("serious", "critical")
    ]


def npm_package(cache: Path, spec: str, file: str) -> Path | None:
    """``file`` of the npm package ``spec`` (e.g. ``axe-core@4``), installed into ``cache`` with npm
    if missing; None when npm or the registry is not there."""
    path = cache / "node_modules" / file
    if not path.exists() and shutil.which("npm"):
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", spec],
            cwd=cache,
            capture_output=True,
            timeout=180,
            check=False,
        )
    return path if path.exists() else None
