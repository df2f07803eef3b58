// elevenfactor run page: keep a run that is not finished current without a reload.
// Listens to /ui/runs/{id}/events (server-sent events: status, step, end), updates
// #run-status at once, and swaps in the page's live part (?part=live) after each change.
// Without this script (or EventSource) the page is complete; reloading shows the news.
"use strict";
(function () {
  var box = document.getElementById("run-live");
  if (!box || box.dataset.finished === "true" || !window.EventSource || !window.fetch) {
    return;
  }
  var badge = document.getElementById("run-status");
  var cancelNote = document.getElementById("run-cancel-note");
  var liveNote = document.getElementById("run-live-note");
  var source = new EventSource(box.dataset.events);
  var timer = null;
  var busy = false;
  var again = false;
  var done = false;

  function finished(status) {
    return status === "succeeded" || status === "failed" || status === "cancelled";
  }

  function setStatus(status, cancelRequested) {
    if (!badge || !status) { return; }
    if (badge.dataset.status !== status) {
      badge.textContent = status;
      badge.dataset.status = status;
      badge.className = "badge s-" + status;
    }
    if (cancelNote) { cancelNote.hidden = !(cancelRequested && !finished(status)); }
  }

  function stop() {
    done = true;
    source.close();
    box.dataset.finished = "true";
    if (liveNote) { liveNote.hidden = true; }
  }

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d.getTime())) { el.title = d.toLocaleString(); }
    });
  }

  function swap(html) {
    // Keep what the reader opened and where the keyboard focus was.
    var open = [];
    box.querySelectorAll("details[open][id]").forEach(function (d) { open.push(d.id); });
    var focused = document.activeElement && box.contains(document.activeElement)
      ? document.activeElement.id : "";
    box.innerHTML = html;
    open.forEach(function (id) {
      var d = document.getElementById(id);
      if (d && d.tagName === "DETAILS") { d.open = true; }
    });
    if (focused) {
      var el = document.getElementById(focused);
      if (el) { el.focus(); }
    }
    localTimes(box);
    var part = box.querySelector(".run-live-part");
    if (part) {
      setStatus(part.dataset.status, part.dataset.cancelRequested === "true");
      if (part.dataset.finished === "true") { stop(); }
    }
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(box.dataset.live, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(swap)
      .catch(function () { /* the next event tries again; a reload always works */ })
      .then(function () {
        busy = false;
        if (again) { again = false; schedule(); }
      });
  }

  function schedule() {
    if (timer !== null) { return; }
    timer = window.setTimeout(function () { timer = null; refresh(); }, 250);
  }

  function read(event) {
    try { return JSON.parse(event.data); } catch (e) { return {}; }
  }

  source.addEventListener("status", function (event) {
    var data = read(event);
    setStatus(data.status, data.cancel_requested);
    schedule();
  });
  source.addEventListener("step", schedule);
  source.addEventListener("end", function (event) {
    var data = read(event);
    setStatus(data.status, false);
    if (!done) { source.close(); }
    refresh();
  });
})();
