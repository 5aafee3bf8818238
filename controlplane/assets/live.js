// Turbo dashboard: live figures from /events (server-sent events), no framework.
(function () {
  "use strict";
  if (!window.EventSource || !document.querySelector("[data-balance], [data-online], [data-invoice], #live-chart")) return;
  var units = ["B", "KB", "MB", "GB", "TB"];
  function human(n) {
    var u = 0;
    while (n >= 1000 && u < units.length - 1) { n /= 1000; u++; }
    return u === 0 ? n + " B" : n.toFixed(1) + " " + units[u];
  }
  var samples = []; // [seconds, total bytes used]
  function drawRate() {
    var chart = document.querySelector("#live-chart polyline");
    if (!chart || samples.length < 2) return;
    var rates = [];
    for (var i = 1; i < samples.length; i++) {
      var dt = samples[i][0] - samples[i - 1][0];
      rates.push(dt > 0 ? (samples[i][1] - samples[i - 1][1]) / dt : 0);
    }
    var peak = Math.max.apply(null, rates.concat([1]));
    var step = 600 / Math.max(rates.length - 1, 1);
    chart.setAttribute("points", rates.map(function (r, i) {
      return (i * step).toFixed(1) + "," + (100 - r * 95 / peak).toFixed(1);
    }).join(" "));
    var rate = document.getElementById("rate");
    if (rate) rate.textContent = human(Math.round(rates[rates.length - 1])) + "/s now";
  }
  var events = new EventSource("/events");
  events.addEventListener("balances", function (e) {
    var keys = JSON.parse(e.data), used = 0;
    Object.keys(keys).forEach(function (id) {
      used += keys[id].used;
      document.querySelectorAll('[data-balance="' + id + '"]').forEach(function (el) {
        el.textContent = human(keys[id].balance);
        el.setAttribute("data-bytes", keys[id].balance);
      });
      document.querySelectorAll('[data-used="' + id + '"]').forEach(function (el) {
        el.textContent = human(keys[id].used);
      });
      if (keys[id].revoked) {
        document.querySelectorAll('[data-state="' + id + '"]').forEach(function (el) {
          el.textContent = "revoked";
        });
      }
    });
    sample(used);
  });
  // Balances arrive only when usage moves: while none come, the rate falls to zero.
  function sample(used) {
    samples.push([Date.now() / 1000, used]);
    if (samples.length > 120) samples.shift();
    drawRate();
  }
  setInterval(function () {
    var last = samples[samples.length - 1];
    if (last && Date.now() / 1000 - last[0] >= 2) sample(last[1]);
  }, 2000);
  events.addEventListener("nodes", function (e) {
    var nodes = JSON.parse(e.data);
    Object.keys(nodes).forEach(function (id) {
      document.querySelectorAll('[data-online="' + id + '"]').forEach(function (el) {
        if (el.textContent !== "revoked") {
          el.textContent = nodes[id].online ? "online" : nodes[id].refused ? "refused: " + nodes[id].refused : "offline";
        }
      });
      ["streams", "country", "score", "latency", "reliability"].forEach(function (field) {
        document.querySelectorAll("[data-" + field + '="' + id + '"]').forEach(function (el) {
          el.textContent = nodes[id][field] === null ? "—" : nodes[id][field];
        });
      });
    });
  });
  events.addEventListener("invoices", function (e) {
    var invoices = JSON.parse(e.data) || {};
    Object.keys(invoices).forEach(function (id) {
      document.querySelectorAll('[data-invoice="' + id + '"]').forEach(function (el) {
        el.textContent = invoices[id].status;
      });
      document.querySelectorAll('[data-paid="' + id + '"]').forEach(function (el) {
        el.textContent = invoices[id].paid_units;
      });
      document.querySelectorAll('[data-credited="' + id + '"]').forEach(function (el) {
        el.textContent = invoices[id].credited;
      });
    });
  });
})();
