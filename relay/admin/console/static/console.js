// relay console: a little script over server-rendered pages. Every page reads without it;
// it adds live lists, select-all and replay progress. It builds nodes with textContent only
// (never innerHTML), so nothing a provider sent can become markup.
(function () {
  "use strict";

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function pill(word) {
    return el("span", word, "pill " + word);
  }

  function timeCell(unix) {
    // A row added live arrived after the page was read: "just now" (the browser's clock may
    // not agree with the server's to the second, so no age is computed from it).
    var td = el("td", null, "nowrap");
    var iso = new Date(unix * 1000).toISOString();
    var t = el("time", "just now");
    t.setAttribute("datetime", iso);
    t.title = iso;
    td.appendChild(t);
    return td;
  }

  function targetsCell(ev) {
    var td = el("td");
    td.dataset.field = "targets";
    var targets = ev.targets || [];
    if (!targets.length) {
      td.appendChild(pill("unrouted"));
      return td;
    }
    targets.forEach(function (t, i) {
      var span = el("span", t.target + " ", "ts");
      span.appendChild(pill(t.state));
      if (t.attempts > 1) span.appendChild(el("span", " \u00d7" + t.attempts, "note"));
      if (i) td.appendChild(document.createTextNode(" "));
      td.appendChild(span);
    });
    return td;
  }

  function eventRow(ev) {
    var tr = el("tr");
    tr.dataset.id = ev.id;
    tr.appendChild(timeCell(ev.received_at));
    var idCell = el("td", null, "mono nowrap");
    var a = el("a", ev.id);
    a.href = "/events/" + encodeURIComponent(ev.id);
    idCell.appendChild(a);
    tr.appendChild(idCell);
    tr.appendChild(el("td", ev.source || "-"));
    tr.appendChild(el("td", ev.type || "-"));
    tr.appendChild(targetsCell(ev));
    return tr;
  }

  function ensureTable(live) {
    var table = document.getElementById("events");
    if (table && table.tagName === "TABLE") return table.tBodies[0];
    // The page said "No event matches": swap that paragraph for an empty table.
    table = el("table");
    table.id = "events";
    var head = table.createTHead().insertRow();
    ["Received", "Event", "Source", "Type", "Targets"].forEach(function (h) {
      var th = el("th", h);
      th.scope = "col";
      head.appendChild(th);
    });
    var body = table.createTBody();
    var empty = document.getElementById("events");
    if (empty) empty.replaceWith(table);
    else live.after(table);
    return body;
  }

  function startLive(live) {
    var poll = live.dataset.poll;
    var seconds = Number(live.dataset.seconds || 5);
    var label = el("label");
    var box = el("input");
    box.type = "checkbox";
    box.checked = true;
    box.id = "live-toggle";
    label.htmlFor = "live-toggle";
    label.textContent = "Live updates";
    var status = el("span", "", "live-status");
    live.appendChild(box);
    live.appendChild(label);
    live.appendChild(status);
    function tick() {
      if (!box.checked || document.visibilityState !== "visible") return;
      fetch(poll, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (data) {
          var body = ensureTable(live);
          var fresh = 0;
          (data.events || []).slice().reverse().forEach(function (ev) {
            var row = eventRow(ev);
            var old = body.querySelector('tr[data-id="' + CSS.escape(ev.id) + '"]');
            if (old) {
              old.replaceChild(row.lastChild, old.querySelector('[data-field="targets"]'));
            } else {
              row.className = "new";
              body.insertBefore(row, body.firstChild);
              fresh += 1;
            }
          });
          var limit = Number(new URL(poll, location.href).searchParams.get("limit") || 50);
          while (body.rows.length > limit) body.deleteRow(-1);
          status.textContent = fresh ? fresh + " new event(s)" : "up to date";
        })
        .catch(function (err) {
          status.textContent = "not updating: " + err.message;
        });
    }
    setInterval(tick, seconds * 1000);
  }

  function startSelectAll(box) {
    var form = box.form;
    var count = form.querySelector("[data-selected-count]");
    function boxes() {
      return Array.prototype.slice.call(form.querySelectorAll('input[name="letter"]'));
    }
    function update() {
      var n = boxes().filter(function (b) { return b.checked; }).length;
      if (count) count.textContent = n + " selected";
    }
    box.addEventListener("change", function () {
      boxes().forEach(function (b) { b.checked = box.checked; });
      update();
    });
    form.addEventListener("change", update);
    update();
  }

  function startProgress(node) {
    var poll = node.dataset.poll;
    var bar = node.querySelector("progress");
    var text = node.querySelector("[data-progress-text]");
    function tick() {
      fetch(poll, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (data) {
          var job = data.job || data;
          if (bar) {
            bar.max = job.total || 1;
            bar.value = job.done || 0;
          }
          if (text) text.textContent = (job.done || 0) + " of " + (job.total || 0) + " done";
          if (job.state && job.state !== "running") location.reload();
          else setTimeout(tick, 1000);
        })
        .catch(function () { setTimeout(tick, 3000); });
    }
    tick();
  }

  function startRefresh(node) {
    var seconds = Number(node.dataset.refresh || 15);
    setInterval(function () {
      var active = document.activeElement;
      var busy = active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA");
      if (!busy && document.visibilityState === "visible") location.reload();
    }, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("live");
    if (live && live.dataset.poll) startLive(live);
    document.querySelectorAll("input[data-select-all]").forEach(startSelectAll);
    document.querySelectorAll("[data-job]").forEach(startProgress);
    document.querySelectorAll("[data-refresh]").forEach(startRefresh);
  });
})();
