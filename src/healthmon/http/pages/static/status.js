// healthmon status page: live statuses (the API's event stream), the latency chart
// (uPlot, vendored) and the day bars' tooltips. Every figure is already in the HTML:
// without this script the page is the same, only not live.
"use strict";
(function () {
  const body = document.body;
  const root = body.dataset.root || "";
  const live = document.getElementById("live");
  const SEVERITY = { unhealthy: 0, degraded: 1, unknown: 2, healthy: 3 };

  function utc(seconds) {
    return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }
  function dur(seconds) {  // as the server writes them (render.duration)
    if (seconds < 10) return seconds.toFixed(1) + " s";
    if (seconds < 60) return Math.round(seconds) + " s";
    let m = Math.floor(Math.round(seconds) / 60);
    const two = (n) => String(n).padStart(2, "0");
    if (m < 60) return m + "m" + two(Math.round(seconds) % 60) + "s";
    let h = Math.floor(m / 60);
    if (h < 24) return h + "h" + two(m % 60) + "m";
    return Math.floor(h / 24) + "d" + two(h % 24) + "h";
  }
  function pct(share) {
    if (share === null || share === undefined) return "-";
    if (share === 1) return "100 %";
    return (Math.floor(share * 100000) / 1000).toFixed(3) + " %";
  }

  // -- live status ---------------------------------------------------------------------
  function badge(el, status) {
    el.textContent = status.toUpperCase();
    el.className = "badge s-" + status;
    el.dataset.status = status;
  }
  function setLive(text, state) {
    live.textContent = text;
    live.className = "live " + state;
  }
  function rowsOf(name) {
    // Compared as data, never put into a selector: a name may hold any character.
    return Array.from(document.querySelectorAll("[data-service]")).filter(
      (el) => el.dataset.service === name && (el.tagName === "TR" || el.id === "service"));
  }
  function apply(t) {
    for (const el of rowsOf(t.service)) {
      const old = el.querySelector(".st .badge");
      const before = old ? old.dataset.status : null;
      if (old) badge(old, t.to_status);
      const since = el.querySelector(".since");
      if (since) {
        const ago = "for " + dur(Math.max(0, Date.now() / 1000 - t.ts));
        since.textContent = el.tagName === "TR" ? ago : "since " + utc(t.ts) + " (" + ago + ")";
        since.title = utc(t.ts);
      }
      if (el.tagName === "TR") {
        el.className = "r-" + t.to_status + " changed";
        const count = (s) => document.querySelector('[data-count="' + s + '"] b');
        if (before && count(before)) count(before).textContent = +count(before).textContent - 1;
        if (count(t.to_status)) count(t.to_status).textContent = +count(t.to_status).textContent + 1;
        // The fleet's status is its worst service's (as the monitor's cluster status).
        const fleet = document.querySelector("#fleet-status .badge");
        const worst = Object.keys(SEVERITY).find((s) => count(s) && +count(s).textContent > 0);
        if (fleet) badge(fleet, worst || "unknown");
      }
    }
  }
  let lostAt = null;
  function connect(after) {
    const service = document.getElementById("service");
    let url = root + "/api/v1/events?after=" + encodeURIComponent(after);
    if (service) url += "&service=" + encodeURIComponent(service.dataset.service);
    const source = new EventSource(url);
    source.onopen = () => {
      lostAt = null;
      setLive("live: status changes appear as they are committed", "on");
    };
    source.addEventListener("transition", (event) => {
      const t = JSON.parse(event.data);
      body.dataset.index = event.lastEventId;
      apply(t);
    });
    source.onerror = () => {
      if (lostAt === null) lostAt = new Date();
      setLive("connection lost at " + utc(lostAt / 1000) + "; reconnecting… (figures may be stale)",
        "lost");
      if (source.readyState === EventSource.CLOSED) {
        // The server refused (e.g. too many streams): try again from the last id seen.
        setTimeout(() => connect(body.dataset.index), 3000);
      }
    };
  }
  if (window.EventSource && live) {
    setLive("connecting…", "");
    connect(body.dataset.index || "0");
  }

  // -- day tooltips (overview) ------------------------------------------------------------
  const tip = document.getElementById("tip");
  const days = new Map();
  async function daysOf(name) {
    if (!days.has(name)) {
      days.set(name, fetch(root + "/days?service=" + encodeURIComponent(name))
        .then((r) => (r.ok ? r.json() : null)).catch(() => null));
    }
    return days.get(name);
  }
  async function showTip(svg, event) {
    const box = svg.getBoundingClientRect();
    const list = await daysOf(svg.dataset.service);
    if (!list || !list.length) return;
    const index = Math.min(list.length - 1, Math.max(0, Math.floor(
      (event.clientX - box.left) / box.width * list.length)));
    const d = list[index];
    tip.textContent = d.uptime === null
      ? d.day + ": not observed"
      : d.day + ": " + pct(d.uptime) + " up, " + d.checks.toLocaleString("en") + " checks, "
        + d.failed.toLocaleString("en") + " failed";
    tip.hidden = false;
    const left = Math.min(event.clientX + 12, document.documentElement.clientWidth - tip.offsetWidth - 8);
    tip.style.left = (window.scrollX + Math.max(0, left)) + "px";
    tip.style.top = (window.scrollY + box.bottom + 4) + "px";
  }
  if (tip) {
    for (const svg of document.querySelectorAll("td.bars svg")) {
      svg.addEventListener("mousemove", (e) => showTip(svg, e));
      svg.addEventListener("mouseleave", () => { tip.hidden = true; });
      const title = svg.querySelector("title");  // ours replaces it; it stays as the label
      if (title) { svg.setAttribute("aria-label", title.textContent); title.remove(); }
    }
  }

  // -- latency chart (service page) --------------------------------------------------------
  const holder = document.getElementById("chart");
  const source = document.getElementById("chart-data");
  if (holder && source && window.uPlot) {
    const data = JSON.parse(source.textContent);
    const dark = window.matchMedia("(prefers-color-scheme: dark)").matches;
    const axis = { stroke: dark ? "#9aa3b2" : "#5b6475", grid: { stroke: dark ? "#2a2f38" : "#e3e6ec" } };
    const line = (label, stroke) => ({ label, stroke, width: 1.5, spanGaps: false,
      value: (u, v, series, index) => (index === null || index === undefined ? "-"
        : v === null || v === undefined ? "not observed" : v.toFixed(1) + " ms") });
    const span = data.t.length ? data.t[data.t.length - 1] - data.t[0] : 0;
    const two = (n) => String(n).padStart(2, "0");
    const tick = (ts) => {
      const d = new Date(ts * 1000);
      const hm = two(d.getUTCHours()) + ":" + two(d.getUTCMinutes());
      const md = two(d.getUTCMonth() + 1) + "-" + two(d.getUTCDate());
      return span > 2 * 86400 && hm === "00:00" ? md : span > 2 * 86400 ? md + " " + hm : hm;
    };
    const opts = {
      width: Math.max(300, holder.clientWidth), height: 260,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      series: [{ label: "UTC", value: (u, ts) => (ts === null ? "-" : utc(ts)) }, line("p50", "#2e9e5b"), line("p95", "#f0a202"), line("p99", "#d64545")],
      axes: [Object.assign({ values: (u, splits) => splits.map(tick),
        space: span > 2 * 86400 ? 110 : 60 }, axis),
        Object.assign({ label: "ms" }, axis)],
      scales: { y: { range: (u, min, max) => [0, max === null ? 1 : max * 1.1] } },
    };
    const plot = new uPlot(opts, [data.t, data.p50, data.p95, data.p99], holder);
    holder.dataset.points = String(data.t.length);
    holder.dataset.drawn = String(data.p95.filter((v) => v !== null).length);
    window.addEventListener("resize", () =>
      plot.setSize({ width: Math.max(300, holder.clientWidth), height: 260 }));
  }
})();
