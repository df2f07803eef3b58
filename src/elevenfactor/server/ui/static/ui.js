// elevenfactor dashboard: small progressive enhancement. Every page works without it.
"use strict";
(function () {
  // Forms that change something ask first when they carry data-confirm.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm) {
      if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
    }
  });
  // Times are rendered in UTC by the server; show them in the reader's zone as a tooltip.
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var d = new Date(el.getAttribute("datetime"));
    if (!isNaN(d.getTime())) { el.title = d.toLocaleString(); }
  });
})();
