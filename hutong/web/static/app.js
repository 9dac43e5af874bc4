// Hutong portals: progressive enhancement only (pages work without it).
// Charts: <canvas data-chart="ID"> with its data in <script type="application/json" id="ID">
// (no inline script: the Content-Security-Policy allows scripts from this origin only).
(function () {
  "use strict";
  function draw(canvas) {
    var src = document.getElementById(canvas.getAttribute("data-chart"));
    if (!src || typeof Chart === "undefined") { return; }
    var spec = JSON.parse(src.textContent);
    var x = spec.options && spec.options.scales && spec.options.scales.x;
    if (x && x.hutongDays) {
      // A time axis without a date adapter: x is days since 1970 (hutong.web.ui.record.trend_chart).
      var day = function (v) { return new Date(v * 86400000).toISOString().slice(0, 10); };
      x.ticks = { callback: day, maxTicksLimit: 6 };
      spec.options.plugins = spec.options.plugins || {};
      spec.options.plugins.tooltip = { callbacks: { title: function (items) {
        return items.length ? day(items[0].parsed.x) : ""; } } };
    }
    canvas.chart = new Chart(canvas, spec);
    canvas.setAttribute("data-drawn", "1");
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("canvas[data-chart]").forEach(draw);
    document.querySelectorAll("[data-confirm]").forEach(function (el) {
      el.addEventListener("submit", function (ev) {
        if (!window.confirm(el.getAttribute("data-confirm"))) { ev.preventDefault(); }
      });
    });
  });
})();
