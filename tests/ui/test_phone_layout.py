"""Phone-first layouts (issue 16, item 2): every page of the tour
(tests/ui/tour.py) at 390 px is no wider than the screen, and no table cell
is squeezed below four characters (a lab item name one character per line);
wide tables scroll inside their own box instead.  Screenshots of every page
at 390 px and 1366 px go to var/test-artifacts/screenshots/
(``<page>-390.png``, ``<page>-1366.png``).
"""

from __future__ import annotations

from typing import Any

from conftest import SCREENSHOTS
from playwright.sync_api import Browser
from tour import Tour, tour  # noqa: F401  (the fixture)

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}
MIN_CHARS = 4

# Page width, and the cells narrower than MIN_CHARS characters of their own
# font (CJK characters are 1 em wide; a cell holding fewer characters than
# that is not held to it).  Cells inside closed <details> are not rendered.
MEASURE = """(minChars) => {
  const out = {scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth, narrow: [], wide: []};
  for (const c of document.querySelectorAll('td, th')) {
    if (!c.offsetParent) continue;
    const text = c.innerText.trim();
    if ([...text].length < minChars) continue;
    const cs = getComputedStyle(c);
    const w = c.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    const fs = parseFloat(cs.fontSize);
    if (w < 0.9 * minChars * fs) out.narrow.push(`${text.slice(0, 16)} (${(w / fs).toFixed(1)} em)`);
  }
  if (out.scroll > out.inner) {
    for (const e of document.body.querySelectorAll('*')) {
      const r = e.getBoundingClientRect();
      if (r.right > out.inner + 1 && r.width > 0 && !e.closest('.table-wrap')) {
        out.wide.push(`${e.tagName.toLowerCase()}.${e.className} ${Math.round(r.right)} px`);
      }
    }
  }
  out.wide = out.wide.slice(0, 6);
  out.narrow = out.narrow.slice(0, 6);
  return out;
}"""


# Chart.js animates a chart for its first second; Chart.animator (UMD build) says when it is done.
CHARTS_DRAWN = ("() => typeof Chart === 'undefined' || "
                "Object.values(Chart.instances).every(c => !Chart.animator.running(c))")


def measure(page: Any) -> dict[str, Any]:
    got: dict[str, Any] = page.evaluate(MEASURE, MIN_CHARS)
    return got


def test_measure_sees_a_squeezed_cell_and_a_wide_page(browser: Browser) -> None:
    """The measurement itself: a page built to fail both checks fails them."""
    page = browser.new_page(viewport=PHONE)  # type: ignore[arg-type]
    try:
        page.set_content("<html><body><table><tr><td style='width:1em'>尿白细胞酯酶</td><td>"
                         + "宽" * 60 + "</td></tr></table><div style='width:600px'>x</div></body></html>")
        got = measure(page)
        assert got["scroll"] > got["inner"], got
        assert any("尿白细胞" in n for n in got["narrow"]), got
    finally:
        page.close()


def test_every_page_fits_a_phone_and_is_shot_at_both_widths(tour: Tour) -> None:  # noqa: F811
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems: dict[str, Any] = {}
    for name, role, visit in tour.pages:
        page = tour.tabs[role]
        page.set_viewport_size(PHONE)
        visit(page)
        got = measure(page)
        if got["scroll"] > got["inner"] or got["narrow"]:
            problems[name] = got
        page.wait_for_function(CHARTS_DRAWN)  # the shot shows each chart whole, not mid-animation
        page.screenshot(path=str(SCREENSHOTS / f"{name}-390.png"), full_page=True)
        page.set_viewport_size(DESKTOP)
        page.wait_for_timeout(50)  # charts redraw at the new width
        page.screenshot(path=str(SCREENSHOTS / f"{name}-1366.png"), full_page=True)
        page.set_viewport_size(PHONE)
    assert not problems, "\n".join(f"{n}: {v}" for n, v in problems.items())
