// The sluice control dashboard: polls the HTTP API (control/README.md) every
// 2 s and renders it. No dependencies, no network beyond the API; every value
// from the server is written with textContent, never parsed as HTML.
(function () {
  "use strict";

  var POLL_MS = 2000;
  var MAX_EVENTS = 200;
  var TOKEN_KEY = "sluice.token";

  var params = new URLSearchParams(window.location.search);
  var selected = params.get("id"); // null: the first migration
  var polling = false, again = false;

  function $(id) { return document.getElementById(id); }

  function text(el, s) { el.textContent = s == null ? "—" : String(s); return el; }

  function cell(tr, s, cls) {
    var td = document.createElement("td");
    text(td, s);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function api(path, opts) {
    return fetch(path, opts).then(function (r) {
      return r.text().then(function (body) {
        var doc = null;
        try { doc = body ? JSON.parse(body) : null; } catch (e) { doc = null; }
        if (!r.ok) {
          var msg = doc && doc.error ? doc.error : (body || r.statusText || "request failed");
          var err = new Error(msg + " (HTTP " + r.status + ")");
          err.status = r.status;
          throw err;
        }
        return doc;
      });
    });
  }

  function enc(id) { return encodeURIComponent(id); }

  function trafficText(t) {
    if (!t) return null;
    var pct = t.read_percent_target == null ? "?" : t.read_percent_target;
    return pct + "% reads to target, writes to " + (t.writes || "?");
  }

  function num(v, digits) {
    if (v == null || isNaN(v)) return null;
    return digits == null ? String(v) : Number(v).toFixed(digits);
  }

  function renderList(list) {
    var tbody = $("migrations").tBodies[0];
    tbody.replaceChildren();
    $("no-migrations").hidden = list.length > 0;
    list.forEach(function (m) {
      var tr = document.createElement("tr");
      tr.dataset.id = m.migration_id;
      if (m.migration_id === selected) tr.className = "selected";
      cell(tr, m.migration_id);
      cell(tr, m.phase);
      cell(tr, m.state, "state-" + m.state);
      var t = m.traffic || {};
      cell(tr, t.read_percent_target == null ? null : t.read_percent_target + " %");
      cell(tr, t.writes);
      cell(tr, (m.classification || "?") + " / " + (m.strategy || "?"));
      tr.addEventListener("click", function () { select(m.migration_id); });
      tbody.appendChild(tr);
    });
  }

  function renderStatus(s) {
    text($("selected-id"), s.migration_id);
    text($("phase"), s.phase);
    var st = text($("state"), s.state);
    st.className = "state-" + s.state;
    text($("traffic"), trafficText(s.traffic));
    text($("divergent"), num(s.divergent_rows));
    var lag = num(s.replication_lag_seconds, 1);
    text($("lag"), lag == null ? null : lag + " s");
    var v = s.last_validation;
    var since = num(s.seconds_since_validation, 0);
    text($("validation"), v ? (v.kind + " of " + v.table + ": " + (v.equal ? "equal" : "DIFFERENT") +
                               (since == null ? "" : ", " + since + " s ago")) : null);
    text($("abort-reason"), s.abort_reason);
    var done = s.state === "aborted" || s.state === "completed";
    $("abort").disabled = done;

    var tbody = $("gates").tBodies[0];
    tbody.replaceChildren();
    (s.gates || []).forEach(function (g) {
      var tr = document.createElement("tr");
      tr.dataset.gate = g.name;
      cell(tr, g.name);
      cell(tr, g.ok ? "✓ ok" : "✗ failing", g.ok ? "ok" : "bad");
      cell(tr, g.detail);
      tbody.appendChild(tr);
    });
    if (!tbody.children.length) {
      var tr = document.createElement("tr");
      cell(tr, "no gates for this phase", "muted").colSpan = 3;
      tbody.appendChild(tr);
    }
    drawChart($("chart"), s.history || []);
  }

  function renderEvents(events) {
    var list = events.slice();
    // newest first: by id when the server gives one, else by time
    list.sort(function (a, b) {
      if (a.id != null && b.id != null) return b.id - a.id;
      return String(b.at).localeCompare(String(a.at));
    });
    list = list.slice(0, MAX_EVENTS);
    var ol = $("events");
    ol.replaceChildren();
    list.forEach(function (e) {
      var li = document.createElement("li");
      li.dataset.id = e.id;
      [["at", e.at], ["actor", e.actor], ["kind", e.kind], ["phase", e.phase],
       ["detail", typeof e.detail === "string" ? e.detail : JSON.stringify(e.detail)]]
        .forEach(function (p) {
          var sp = document.createElement("span");
          sp.className = p[0];
          text(sp, p[1]);
          li.appendChild(sp);
        });
      ol.appendChild(li);
    });
  }

  // Divergent rows (left axis) and lag in seconds (right axis) against time.
  function drawChart(canvas, history) {
    var dpr = window.devicePixelRatio || 1;
    var w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    var css = getComputedStyle(document.documentElement);
    var cBad = css.getPropertyValue("--bad").trim() || "#c62828";
    var cLag = css.getPropertyValue("--accent").trim() || "#2557c7";
    var cLine = css.getPropertyValue("--line").trim() || "#dde1e8";
    var cMuted = css.getPropertyValue("--muted").trim() || "#6b7385";
    ctx.font = "11px system-ui, sans-serif";

    var pts = history.map(function (p) {
      return {t: Date.parse(p.at), d: Number(p.divergent_rows) || 0, l: Number(p.lag) || 0};
    }).filter(function (p) { return !isNaN(p.t); });
    pts.sort(function (a, b) { return a.t - b.t; });

    var L = 50, R = 50, T = 12, B = 26;
    var pw = w - L - R, ph = h - T - B;
    ctx.strokeStyle = cLine;
    ctx.lineWidth = 1;
    ctx.strokeRect(L + 0.5, T + 0.5, pw, ph);

    if (!pts.length) {
      ctx.fillStyle = cMuted;
      ctx.textAlign = "center";
      ctx.fillText("no samples yet", L + pw / 2, T + ph / 2);
    } else {
      var t0 = pts[0].t, t1 = pts[pts.length - 1].t;
      if (t1 === t0) t1 = t0 + 1000;
      var dMax = Math.max(1, Math.max.apply(null, pts.map(function (p) { return p.d; })));
      var lMax = Math.max(1, Math.max.apply(null, pts.map(function (p) { return p.l; })));
      var x = function (t) { return L + (t - t0) / (t1 - t0) * pw; };

      // grid and axis labels
      ctx.fillStyle = cMuted;
      for (var i = 0; i <= 4; i++) {
        var y = T + ph - ph * i / 4;
        ctx.strokeStyle = cLine;
        ctx.beginPath(); ctx.moveTo(L, y + 0.5); ctx.lineTo(L + pw, y + 0.5); ctx.stroke();
        ctx.textAlign = "right";
        ctx.fillText(fmtAxis(dMax * i / 4), L - 6, y + 4);
        ctx.textAlign = "left";
        ctx.fillText(fmtAxis(lMax * i / 4) + "s", L + pw + 6, y + 4);
      }
      ctx.textAlign = "left";
      ctx.fillText(new Date(t0).toISOString().slice(11, 19), L, h - 8);
      ctx.textAlign = "right";
      ctx.fillText(new Date(t1).toISOString().slice(11, 19) + " UTC", L + pw, h - 8);

      series(ctx, pts, x, function (p) { return T + ph - p.d / dMax * ph; }, cBad);
      series(ctx, pts, x, function (p) { return T + ph - p.l / lMax * ph; }, cLag);
    }
    canvas.dataset.points = String(pts.length);
    document.body.dataset.chart = "drawn";
  }

  function series(ctx, pts, x, y, color) {
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    pts.forEach(function (p, i) {
      if (i) ctx.lineTo(x(p.t), y(p)); else ctx.moveTo(x(p.t), y(p));
    });
    ctx.stroke();
    if (pts.length === 1) {
      ctx.beginPath(); ctx.arc(x(pts[0].t), y(pts[0]), 3, 0, 2 * Math.PI); ctx.fill();
    }
  }

  function fmtAxis(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
    return v % 1 ? v.toFixed(1) : String(v);
  }

  function select(id) {
    selected = id;
    var u = new URL(window.location.href);
    u.searchParams.set("id", id);
    window.history.replaceState(null, "", u.toString());
    $("abort-result").textContent = "";
    poll();
  }

  function setConn(ok, msg) {
    var c = $("conn");
    c.textContent = msg;
    c.className = ok ? "muted" : "error-banner";
  }

  function poll() {
    if (polling) { again = true; return; }
    polling = true;
    api("/migrations").then(function (doc) {
      var list = (doc && doc.migrations) || [];
      if (!selected && list.length) selected = list[0].migration_id;
      renderList(list);
      if (!selected) return null;
      var id = enc(selected);
      return Promise.all([
        api("/migrations/" + id + "/status").then(renderStatus),
        api("/migrations/" + id + "/events").then(function (d) { renderEvents((d && d.events) || []); })
      ]);
    }).then(function () {
      // a count of completed polls, for tests and for the curious
      document.body.dataset.polls = String((Number(document.body.dataset.polls) || 0) + 1);
      setConn(true, "updated " + new Date().toLocaleTimeString());
    }).catch(function (e) {
      setConn(false, "cannot reach the API: " + e.message);
    }).then(function () {
      polling = false;
      if (again) { again = false; poll(); }
    });
  }

  function abort() {
    if (!selected) return;
    var out = $("abort-result");
    var reason = window.prompt("Abort " + selected + ": traffic and writes go back to the source. Reason?");
    if (reason == null || !reason.trim()) return;
    var token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      token = window.prompt("API token (operator or approver):");
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
    }
    out.className = "";
    out.textContent = "aborting…";
    api("/migrations/" + enc(selected) + "/abort", {
      method: "POST",
      headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"},
      body: JSON.stringify({reason: reason})
    }).then(function () {
      out.className = "done";
      out.textContent = "aborted";
      poll();
    }).catch(function (e) {
      if (e.status === 401 || e.status === 403) sessionStorage.removeItem(TOKEN_KEY);
      out.className = "error";
      out.textContent = "abort failed: " + e.message;
    });
  }

  $("abort").addEventListener("click", abort);
  poll();
  setInterval(poll, POLL_MS);
})();
