// dockmesh dashboard: progressive enhancement only; every page works without this file.
// 1. Live regions: an element with data-live="URL" is replaced by each `update` event of the
//    server-sent event stream at URL; on `settled` the page reloads to show the outcome.
// 2. <input type=file data-load-into=ID> loads the chosen file's text into the textarea ID.
"use strict";
(function () {
  function live(el) {
    var url = el.getAttribute("data-live");
    if (!url || typeof EventSource === "undefined") return;
    var es = new EventSource(url);
    el.setAttribute("aria-busy", "true");
    es.addEventListener("update", function (e) { el.innerHTML = e.data; });
    es.addEventListener("settled", function (e) {
      el.innerHTML = e.data;
      el.removeAttribute("aria-busy");
      es.close();
      window.location.reload();
    });
    es.onerror = function () {
      // The browser reconnects by itself; say so while it does.
      el.setAttribute("data-stale", "true");
    };
    es.onopen = function () { el.removeAttribute("data-stale"); };
  }
  function loader(input) {
    input.addEventListener("change", function () {
      var target = document.getElementById(input.getAttribute("data-load-into"));
      var file = input.files && input.files[0];
      if (!target || !file) return;
      var reader = new FileReader();
      reader.onload = function () { target.value = String(reader.result); target.focus(); };
      reader.readAsText(file);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(live);
    document.querySelectorAll("input[type=file][data-load-into]").forEach(loader);
  });
})();
