// Hutong portals: progressive enhancement only (pages work without it).
// Charts: <canvas data-chart="ID"> with its data in <script type="application/json" id="ID">
// (no inline script: the Content-Security-Policy allows scripts from this origin only).
(function () {
  "use strict";
  function draw(canvas) {
    var src = document.getElementById(canvas.getAttribute("data-chart"));
    if (!src || typeof Chart === "undefined") { return; }
    var spec = JSON.parse(src.textContent);
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
