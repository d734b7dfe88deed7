/* loglens dashboard: live over Server-Sent Events, charts by uPlot (vendored from npm).
 *
 * Safety rule: data from the server (log fields, service names, alert text) only ever reaches the
 * page through textContent / attributes set by el() below — never through innerHTML — so a log
 * message like <img src=x onerror=alert(1)> is shown as text. The page runs under a CSP without
 * 'unsafe-inline'; styles set from script use the CSSOM (element.style), which CSP allows.
 */
(function () {
  "use strict";

  const MINUTES = 60;
  const CHART_SERIES = 12;  // lines per chart: the busiest services
  const TILE_LIMIT = 200;   // health tiles drawn at most
  const METRICS = [
    { key: "error_rate", fmt: pct },
    { key: "volume", fmt: (v) => (v == null ? "–" : Math.round(v).toLocaleString()) },
    { key: "avg_response_time", fmt: ms },
    { key: "p95_response_time", fmt: ms },
  ];
  const PALETTE = ["#2f6fed", "#e8590c", "#2b8a3e", "#ae3ec9", "#0c8599", "#d6336c", "#5c940d", "#f08c00",
    "#1971c2", "#c2255c", "#7048e8", "#087f5b"];
  const SEVERITY_ORDER = { critical: 0, warning: 1, info: 2 };

  /* ---------- state (also exposed read-only for the browser tests) ---------- */
  const S = {
    config: null,
    services: [],            // last /api/v1/services rows
    servicesAt: 0,           // Date.now() when they were fetched
    alerts: new Map(),       // id -> alert (firing or pending)
    history: [],             // resolved alerts, newest first
    anomalies: [],
    silenced: new Set(),     // alert ids silenced from this page
    alertsAvailable: true,
    anomaliesAvailable: true,
    filter: null,            // selected service (tile click)
    hidden: new Set(),       // services toggled off in chart legends
    colors: new Map(),
    charts: {},              // metric -> {u, labels, key}
    // `asked` numbers the requests of a listing: only the answer to the newest one is shown, so a
    // slow answer to an earlier filter (or page) cannot overwrite the current one's
    logs: { cursor: null, paged: false, asked: 0 },
    dead: { cursor: null, asked: 0 },
    conn: "connecting",
    events: { hello: 0, metrics: 0, alert: 0, anomaly: 0, heartbeat: 0 },
    lastEventAt: 0,
    heartbeatSeconds: 10,
  };
  const pub = { charts: {}, events: S.events, get connection() { return S.conn; }, get filter() { return S.filter; },
    get services() { return S.services.map((s) => s.service); }, refreshes: 0, isolatedPoints: {},
    get logSearches() { return S.logs.asked; }, logAnswers: 0 };
  window.__loglens = pub;

  /* ---------- small helpers ---------- */
  const $ = (id) => document.getElementById(id);

  /** Create an element; text/attrs only (never HTML). */
  function el(tag, props, children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v == null) continue;
        if (k === "text") node.textContent = String(v);
        else if (k === "class") node.className = v;
        else if (k === "dataset") Object.assign(node.dataset, v);
        else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
        else node.setAttribute(k, String(v));
      }
    }
    for (const c of children || []) if (c != null) node.append(c);
    return node;
  }

  function pct(v) { return v == null ? "–" : (v * 100).toFixed(v < 0.1 && v > 0 ? 2 : 1) + "%"; }
  function ms(v) { return v == null ? "–" : (v >= 100 ? Math.round(v) : v.toFixed(1)) + " ms"; }
  function num(v) { return v == null ? "–" : Number(v).toLocaleString(undefined, { maximumFractionDigits: 2 }); }
  function clockTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return d.toLocaleTimeString([], { hour12: false });
  }
  function dateTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return d.toLocaleDateString([], { month: "short", day: "2-digit" }) + " " + d.toLocaleTimeString([], { hour12: false });
  }
  function ago(seconds) {
    if (seconds == null || !isFinite(seconds)) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + "s ago";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s ago";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m ago";
    return Math.floor(s / 86400) + "d ago";
  }
  function since(iso) { return iso ? ago((Date.now() - Date.parse(iso)) / 1000) : "–"; }
  function color(service) {
    if (!S.colors.has(service)) S.colors.set(service, PALETTE[S.colors.size % PALETTE.length]);
    return S.colors.get(service);
  }
  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  /** Run fn at most once per `ms` (first call immediately, one trailing call). */
  function throttle(fn, ms) {
    let last = 0;
    let timer = null;
    return function () {
      if (timer) return;
      const wait = last + ms - Date.now();
      if (wait <= 0) { last = Date.now(); fn(); return; }
      timer = setTimeout(() => { timer = null; last = Date.now(); fn(); }, wait);
    };
  }

  /** Run fn once `ms` after the last call (typing in a search box). */
  function debounce(fn, ms) {
    let timer = null;
    return function () {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  /* ---------- API ---------- */
  // Credentials travel in the HttpOnly session cookie set by the /login form, never in the URL.
  let signingIn = false;
  async function request(path, opts) {
    const init = Object.assign({ credentials: "same-origin" }, opts || {});
    init.headers = Object.assign({ Accept: "application/json" }, init.headers || {});
    const res = await fetch(path, init);
    if (res.status === 401 && !signingIn) {  // a token is required: sign in, then come back
      signingIn = true;
      location.assign("/login");
    }
    return res;
  }
  /** JSON of a GET; null when the endpoint is missing (404) or the server is unreachable. */
  async function getJSON(path) {
    let res;
    try { res = await request(path); } catch (e) { return null; }
    if (res.status === 404) return { __missing: true };
    if (!res.ok) return null;
    return res.json();
  }
  function qs(params) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v != null && v !== "") p.set(k, v);
    const s = p.toString();
    return s ? "?" + s : "";
  }

  /* ---------- connection (SSE) ---------- */
  let source = null;
  let retryTimer = null;
  function setConn(state, text) {
    S.conn = state;
    const node = $("conn");
    node.dataset.state = state;
    node.textContent = text || { live: "live", connecting: "connecting…", reconnecting: "disconnected — reconnecting…",
      disconnected: "disconnected" }[state];
  }
  function connect() {
    if (source) source.close();
    clearTimeout(retryTimer);
    source = new EventSource("/api/v1/stream");
    const on = (kind, fn) => source.addEventListener(kind, (e) => {
      S.events[kind] += 1;
      S.lastEventAt = Date.now();
      let data = null;
      try { data = JSON.parse(e.data); } catch (err) { return; }
      fn(data);
    });
    on("hello", (d) => {
      S.heartbeatSeconds = d.heartbeat_seconds || 10;
      setConn("live");
      refreshAll();
    });
    on("metrics", onMetrics);
    on("alert", onAlert);
    on("anomaly", onAnomaly);
    on("heartbeat", () => {});
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. a 401/503 answer): retry ourselves; an expired session
        // shows as a 401 on this request, which leads to the sign-in form.
        setConn("reconnecting");
        request("/api/v1/dashboard/config").catch(() => {});
        retryTimer = setTimeout(connect, 2000);
      } else {
        setConn("reconnecting");
      }
    };
  }
  // A connection that silently stalls (no event, not even a heartbeat) is replaced.
  setInterval(() => {
    if (S.conn === "live" && S.lastEventAt && Date.now() - S.lastEventAt > S.heartbeatSeconds * 2500) {
      setConn("reconnecting");
      connect();
    }
  }, 2000);

  /* ---------- refresh scheduling ---------- */
  const refreshLive = throttle(() => { refreshCharts(); refreshServices(); }, 1000);
  const refreshSlow = throttle(() => { refreshSummary(); refreshLogsIfLive(); }, 3000);
  const refreshDead = throttle(() => refreshDeadLetters(false), 3000);

  function onMetrics(data) {
    refreshLive();
    refreshSlow();
    if (data.dead_letters) refreshDead();
  }
  function refreshAll() {
    loadConfig().then(() => {
      refreshCharts(); refreshServices(); refreshSummary(); refreshAlerts(); refreshAnomalies();
      searchLogs(false); refreshDeadLetters(false);
    });
  }
  function stamp() { $("updated").textContent = "updated " + new Date().toLocaleTimeString([], { hour12: false }); }

  async function loadConfig() {
    const cfg = await getJSON("/api/v1/dashboard/config");
    if (cfg && !cfg.__missing) S.config = cfg;
  }

  /* ---------- charts ---------- */
  function chartSize(node) {
    const width = Math.max(280, node.clientWidth);
    return { width, height: Math.round(Math.min(300, Math.max(200, width * 0.45))) };
  }

  /** uPlot points filter: when it would draw no points (dense data), still mark values whose
   * neighbours are both empty — a series with one non-null minute has no line to show otherwise. */
  function isolatedPoints(u, si, show) {
    if (show) return null;  // uPlot draws every point already
    const ys = u.data[si];
    const out = [];
    for (let i = 0; i < ys.length; i++) {
      if (ys[i] != null && (i === 0 || ys[i - 1] == null) && (i === ys.length - 1 || ys[i + 1] == null)) out.push(i);
    }
    const chart = u.root.parentElement ? u.root.parentElement.id.replace("chart-", "") : "";
    pub.isolatedPoints[chart + ":" + u.series[si].label] = out.length;
    return out.length ? out : null;
  }

  function makeChart(metric, labels, data) {
    const node = $("chart-" + metric.key);
    const axis = cssVar("--axis");
    const grid = cssVar("--grid");
    const series = [{ label: "time", value: (u, v) => (v == null ? "–" : new Date(v * 1000).toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit" })) }];
    for (const label of labels) {
      series.push({ label, stroke: color(label), width: 2, points: { size: 4, filter: isolatedPoints }, spanGaps: false,
        show: isShown(label), value: (u, v) => metric.fmt(v) });
    }
    const axisFmt = metric.key === "error_rate" ? (u, vals) => vals.map((v) => (v * 100).toFixed(v < 0.1 ? 1 : 0) + "%")
      : (u, vals) => vals.map((v) => (v >= 1000 ? (v / 1000).toFixed(1) + "k" : String(+v.toFixed(2))));
    const opts = Object.assign(chartSize(node), {
      series,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.15 : (metric.key === "error_rate" ? 0.1 : 1)] } },
      axes: [
        { stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } },
        { stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, values: axisFmt, size: 56 },
      ],
      legend: { live: true },
      cursor: { sync: { key: "loglens" }, points: { size: 7 } },
      hooks: { setSeries: [(u, idx, opts) => onLegendToggle(u, idx, opts)] },
    });
    node.replaceChildren();
    const u = new uPlot(opts, data, node);
    return { u, labels, key: labels.join("\u0000") };
  }

  function isShown(label) { return S.filter ? label === S.filter : !S.hidden.has(label); }

  let applying = false;
  function onLegendToggle(u, idx, opts) {
    if (applying || idx == null || opts == null || opts.show === undefined) return;
    const label = u.series[idx].label;
    if (opts.show) S.hidden.delete(label); else S.hidden.add(label);
    if (S.filter) { S.filter = null; renderFilter(); }
    applyVisibility();
  }
  function applyVisibility() {
    applying = true;
    try {
      for (const c of Object.values(S.charts)) {
        c.u.series.forEach((s, i) => {
          if (i === 0) return;
          const show = isShown(s.label);
          if (s.show !== show) c.u.setSeries(i, { show });
        });
      }
    } finally { applying = false; }
  }

  async function refreshChart(metric) {
    // The busiest CHART_SERIES services only: a chart of 20,000 lines is neither drawable nor readable.
    const res = await getJSON("/api/v1/timeseries" + qs({ metric: metric.key, minutes: MINUTES, top: CHART_SERIES }));
    if (!res || res.__missing) return;
    let xs;
    if (res.series.length) xs = res.series[0].points.map((p) => Date.parse(p.t) / 1000);
    else {
      const end = Date.parse(res.end) / 1000;
      xs = Array.from({ length: res.minutes }, (_, i) => end - (res.minutes - 1 - i) * 60);
    }
    const labels = res.series.map((s) => s.service);
    const data = [xs, ...res.series.map((s) => s.points.map((p) => p.v))];
    const key = labels.join("\u0000");
    let chart = S.charts[metric.key];
    if (!chart || chart.key !== key) {
      if (chart) chart.u.destroy();
      chart = S.charts[metric.key] = makeChart(metric, labels, data);
    } else {
      chart.u.setData(data);
    }
    const node = $("chart-" + metric.key);
    node.dataset.points = String(xs.length);
    node.dataset.series = String(labels.length);
    pub.charts[metric.key] = { points: xs.length, series: labels.slice(), end: res.end, last: Object.fromEntries(
      res.series.map((s) => [s.service, s.points[s.points.length - 1].v])) };
  }
  async function refreshCharts() {
    await Promise.all(METRICS.map(refreshChart));
    pub.refreshes += 1;
    stamp();
  }
  function rebuildCharts() {
    for (const m of METRICS) {
      const c = S.charts[m.key];
      if (!c) continue;
      const data = c.u.data;
      c.u.destroy();
      S.charts[m.key] = makeChart(m, c.labels, data);
    }
  }
  if (window.ResizeObserver) {
    const ro = new ResizeObserver(() => {
      for (const m of METRICS) {
        const c = S.charts[m.key];
        if (c) c.u.setSize(chartSize($("chart-" + m.key)));
      }
    });
    document.querySelectorAll(".chart").forEach((n) => ro.observe(n));
  }
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", rebuildCharts);

  /* ---------- service health matrix ---------- */
  const tiles = new Map();
  // At most TILE_LIMIT tiles: every service while there are few, else the busiest ones (or the
  // matches of the search box). The page stays drawable with 100,000 services.
  async function refreshServices() {
    const search = $("svc-search").value.trim();
    let res = await getJSON("/api/v1/services" + qs({ q: search, limit: TILE_LIMIT }));
    if (res && !res.__missing && res.total > TILE_LIMIT) {
      res = await getJSON("/api/v1/services" + qs({ q: search, top: TILE_LIMIT, limit: TILE_LIMIT }));
    }
    if (!res || res.__missing) return;
    S.servicesTotal = res.total == null ? res.services.length : res.total;
    const note = $("health-count");
    note.hidden = S.servicesTotal <= res.services.length;
    note.textContent = `${res.services.length} of ${num(S.servicesTotal)} services shown (busiest first) — search to narrow`;
    S.services = res.services;
    S.servicesAt = Date.now();
    renderServices();
    fillServiceSelect();
  }
  function thresholds(service) {
    const cfg = S.config || { absence_threshold_seconds: 120, absence_enabled: true, error_rate_threshold: 0.1,
      error_rate_min_events: 20, overrides: {} };
    const o = (cfg.overrides || {})[service] || {};
    return {
      absence: o.absence_threshold_seconds != null ? o.absence_threshold_seconds : cfg.absence_threshold_seconds,
      absenceEnabled: cfg.absence_enabled !== false,
      errorRate: o.error_rate_threshold != null ? o.error_rate_threshold : cfg.error_rate_threshold,
      minEvents: cfg.error_rate_min_events || 0,
    };
  }
  function serviceStatus(row, age) {
    const t = thresholds(row.service);
    const alerts = [...S.alerts.values()].filter((a) => a.service === row.service && a.state === "firing");
    // Silent is what the tile shows, beside "last seen": only while no log has arrived for longer than
    // the threshold. A firing absence alert whose service already sends again (its resolution is a
    // moment away) no longer makes the tile say "silent" beside "last seen 1s ago".
    if (age > t.absence && (t.absenceEnabled || alerts.some((a) => a.rule === "absence"))) return "silent";
    const firing = alerts.filter((a) => a.rule !== "absence");
    if (firing.some((a) => a.severity === "critical")) return "critical";
    const enough = row.volume_per_min * 5 >= t.minEvents;
    if (enough && row.error_rate > t.errorRate) return "critical";
    if (firing.length || (enough && row.error_rate > t.errorRate / 2)) return "warning";
    return "healthy";
  }
  function renderServices() {
    const grid = $("health");
    const seen = new Set();
    const elapsed = (Date.now() - S.servicesAt) / 1000;
    for (const row of S.services) {
      seen.add(row.service);
      let t = tiles.get(row.service);
      if (!t) {
        const f = {};
        const dl = el("dl");
        for (const [k, label] of [["vol", "volume/min"], ["err", "error rate"], ["p95", "p95"], ["seen", "last seen"]]) {
          f[k] = el("dd");
          dl.append(el("dt", { text: label }), f[k]);
        }
        f.status = el("span", { class: "status" });
        const node = el("button", { type: "button", class: "tile-svc", dataset: { service: row.service },
          title: "Show only " + row.service + " in charts and logs",
          on: { click: () => selectService(row.service) } },
        [el("div", { class: "row1" }, [el("span", { class: "name", text: row.service }), f.status]), dl]);
        t = { node, f };
        tiles.set(row.service, t);
      }
      const age = row.seconds_since_last_seen + elapsed;
      const status = serviceStatus(row, age);
      t.node.dataset.status = status;
      t.f.status.textContent = status;
      t.f.vol.textContent = num(Math.round(row.volume_per_min * 10) / 10);
      t.f.err.textContent = pct(row.error_rate);
      t.f.p95.textContent = ms(row.p95_response_time_ms);
      t.f.seen.textContent = ago(age);
      t.node.classList.toggle("selected", S.filter === row.service);
    }
    for (const [name, t] of tiles) if (!seen.has(name)) { t.node.remove(); tiles.delete(name); }
    const ordered = S.services.map((r) => tiles.get(r.service).node);
    if (ordered.some((n, i) => grid.children[i] !== n) || grid.children.length !== ordered.length) grid.replaceChildren(...ordered);
    grid.classList.toggle("filtered", !!S.filter);
    $("health-empty").hidden = S.services.length > 0;
  }
  setInterval(renderServices, 1000);  // ages and silence tick locally between pushes
  $("svc-search").addEventListener("input", debounce(refreshServices, 250));

  function selectService(service) {
    S.filter = S.filter === service ? null : service;
    renderFilter();
    applyVisibility();
    renderServices();
    $("f-service").value = S.filter || "";
    searchLogs(false);
  }
  function renderFilter() {
    $("filter-chip").hidden = !S.filter;
    $("filter-name").textContent = S.filter || "";
  }
  $("filter-clear").addEventListener("click", () => { if (S.filter) selectService(S.filter); });

  function fillServiceSelect() {
    const sel = $("f-service");
    const current = sel.value;
    const names = S.services.map((s) => s.service);
    const existing = [...sel.options].slice(1).map((o) => o.value);
    if (names.join("\u0000") === existing.join("\u0000")) return;
    sel.replaceChildren(el("option", { value: "", text: "all" }), ...names.map((n) => el("option", { value: n, text: n })));
    sel.value = names.includes(current) ? current : "";
  }

  /* ---------- alerts and anomalies ---------- */
  function hasFeature(name) { return !S.config || !S.config.features || S.config.features[name] !== false; }
  async function refreshAlerts() {
    if (!hasFeature("alerts")) { S.alertsAvailable = false; renderAlerts(); return; }
    const res = await getJSON("/api/v1/alerts?state=all");
    if (!res) return;
    if (res.__missing) { S.alertsAvailable = false; renderAlerts(); return; }
    S.alertsAvailable = true;
    S.alerts.clear();
    S.history = [];
    for (const a of res.alerts || []) {
      if (a.state === "resolved") S.history.push(a); else S.alerts.set(a.id, a);
    }
    S.history.sort((a, b) => String(b.resolved_at).localeCompare(String(a.resolved_at)));
    S.history = S.history.slice(0, 30);
    renderAlerts();
    renderServices();
  }
  function onAlert(a) {
    if (!a || a.id == null) return;
    S.alertsAvailable = true;
    if (a.state === "resolved") {
      const card = document.querySelector('.alert[data-id="' + CSS.escape(String(a.id)) + '"]');
      S.alerts.delete(a.id);
      S.history = [a, ...S.history.filter((h) => h.id !== a.id)].slice(0, 30);
      if (card) {
        card.classList.add("leaving");
        setTimeout(renderAlerts, 1000);   // let it fade out, then it appears in the history
      } else renderAlerts();
    } else {
      S.alerts.set(a.id, a);
      renderAlerts();
    }
    renderServices();
  }
  function ruleValue(rule, v) {
    if (v == null) return "–";
    if (rule === "error_rate") return pct(v);
    if (rule === "absence") return Math.round(v) + " s";
    if (rule === "volume") return Math.round(v).toLocaleString() + " logs";
    return num(v);
  }
  function alertCard(a) {
    const sev = a.severity || "warning";
    const silenceBtn = el("button", { type: "button", class: "silence", text: "Silence 1h",
      title: "Silence " + a.rule + " for " + (a.service || "all services") + " for one hour" });
    const note = el("span", { class: "muted small" });
    if (S.silenced.has(a.id)) {
      note.textContent = "silenced for 1 h";
      silenceBtn.textContent = "Silenced";
      silenceBtn.disabled = true;
    }
    silenceBtn.addEventListener("click", () => silence(a, silenceBtn, note));
    const firstSeen = a.fired_at || a.started_at;
    return el("div", { class: "alert sev-" + sev, dataset: { id: String(a.id), severity: sev, state: a.state || "firing",
      rule: a.rule || "", service: a.service || "" }, role: "article" }, [
      el("div", { class: "head" }, [
        el("span", { class: "badge sev-" + sev, text: sev }),
        el("span", { class: "rule", text: a.rule || "alert" }),
        a.service ? el("span", { class: "svc", text: a.service }) : null,
        a.state && a.state !== "firing" ? el("span", { class: "muted small", text: a.state }) : null,
        a.silenced ? el("span", { class: "muted small", text: "silenced" }) : null,
      ]),
      a.summary ? el("div", { class: "summary", text: a.summary }) : null,
      el("div", { class: "meta" }, [
        el("span", { class: "since", title: firstSeen || "", text: "since " + clockTime(firstSeen) + " (" + since(firstSeen) + ")" }),
        el("span", { class: "value", text: "value " + ruleValue(a.rule, a.value) + " vs threshold " + ruleValue(a.rule, a.threshold) }),
      ]),
      el("div", { class: "actions" }, [silenceBtn, note]),
    ]);
  }
  function renderAlerts() {
    const firing = [...S.alerts.values()].sort((a, b) =>
      (SEVERITY_ORDER[a.severity] ?? 3) - (SEVERITY_ORDER[b.severity] ?? 3) ||
      String(a.started_at).localeCompare(String(b.started_at)));
    $("alerts-firing").replaceChildren(...firing.map(alertCard));
    const n = firing.filter((a) => a.state === "firing").length;
    $("alert-count").textContent = String(n);
    $("alert-count").dataset.count = String(n);
    $("alerts-empty").hidden = firing.length > 0;
    $("alerts-empty").textContent = S.alertsAvailable ? "No firing alerts." : "Alerting is not enabled on this server.";
    $("alerts-history").replaceChildren(...S.history.map((a) => el("li", { dataset: { id: String(a.id) },
      title: a.summary || "" }, [
      el("span", { class: "badge sev-" + (a.severity || "warning"), text: a.severity || "" }), " ",
      el("strong", { text: a.rule || "" }), " ",
      el("span", { text: a.service || "" }), " · resolved " + clockTime(a.resolved_at) +
        (a.started_at && a.resolved_at ? " after " + ago((Date.parse(a.resolved_at) - Date.parse(a.started_at)) / 1000).replace(" ago", "") : ""),
    ])));
    $("history-empty").hidden = S.history.length > 0;
  }
  async function silence(a, button, note) {
    button.disabled = true;
    const matchers = { rule: a.rule };
    if (a.service) matchers.service = a.service;
    let res;
    try {
      res = await request("/api/v1/silences", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ matchers, duration_seconds: 3600, comment: "silenced from the dashboard", created_by: "dashboard" }) });
    } catch (e) { res = null; }
    if (res && res.ok) { S.silenced.add(a.id); note.textContent = "silenced for 1 h"; button.textContent = "Silenced"; }
    else { note.textContent = res ? "silence failed (" + res.status + ")" : "server unreachable"; button.disabled = false; }
  }

  async function refreshAnomalies() {
    if (!hasFeature("anomalies")) { S.anomaliesAvailable = false; renderAnomalies(); return; }
    const res = await getJSON("/api/v1/anomalies?limit=20");
    if (!res) return;
    if (res.__missing) { S.anomaliesAvailable = false; renderAnomalies(); return; }
    S.anomalies = (res.anomalies || []).slice(0, 20);
    renderAnomalies();
  }
  function onAnomaly(a) {
    if (!a) return;
    S.anomalies = [a, ...S.anomalies.filter((x) => x.id !== a.id)].slice(0, 20);
    renderAnomalies();
  }
  /** " · observed 612 logs/min vs expected 95–130 logs/min" in the anomaly's own unit. */
  function anomalyValue(type, v) {
    if (v == null || !Number.isFinite(Number(v))) return "–";
    if (type === "error_rate") return pct(Number(v));
    if (type === "latency") return ms(Number(v));
    if (type === "volume_spike" || type === "volume_drop") return num(v) + " logs/min";
    return num(v);
  }
  function anomalyValues(a) {
    let text = a.observed != null ? " · observed " + anomalyValue(a.type, a.observed) : "";
    const exp = a.expected;  // {low, high[, median]} per the anomaly schema, or null (no baseline)
    if (exp && typeof exp === "object" && exp.low != null && exp.high != null) {
      text += " vs expected " + anomalyValue(a.type, exp.low) + " – " + anomalyValue(a.type, exp.high);
    } else if (typeof exp === "number") {
      text += " vs expected " + anomalyValue(a.type, exp);
    }
    return text;
  }
  function renderAnomalies() {
    $("anomalies").replaceChildren(...S.anomalies.map((a) => el("li", { dataset: { id: String(a.id) }, title: a.description || "" }, [
      el("span", { class: "badge sev-" + (a.severity || "warning"), text: a.type || "anomaly" }), " ",
      el("strong", { text: a.service || "" }), " ",
      el("span", { text: a.description || "" }),
      el("div", { class: "muted", text: clockTime(a.detected_at) + anomalyValues(a) }),
    ])));
    $("anomalies-empty").hidden = S.anomalies.length > 0;
  }

  /* ---------- summary tiles ---------- */
  function barList(target, rows) {
    const max = Math.max(1e-9, ...rows.map((r) => r.value || 0));
    target.replaceChildren(...rows.map((r) => {
      const fill = el("span");
      fill.style.width = Math.max(2, (100 * (r.value || 0)) / max).toFixed(1) + "%";
      if (r.color) fill.style.background = r.color;
      return el("li", null, [el("span", { class: "label", text: r.label, title: r.label }),
        el("span", { class: "value", text: r.text }), el("span", { class: "bar" }, [fill])]);
    }));
    if (!rows.length) target.replaceChildren(el("li", { class: "muted", text: "no data yet" }));
  }
  async function refreshSummary() {
    const s = await getJSON("/api/v1/metrics/summary" + qs({ minutes: MINUTES, top: 5 }));
    if (!s || s.__missing) return;
    barList($("sum-latency"), s.avg_response_time_ms.filter((r) => r.avg_ms != null)
      .map((r) => ({ label: r.service, value: r.avg_ms, text: ms(r.avg_ms), color: color(r.service) })));
    barList($("sum-users"), s.requests_per_user.map((r) => ({ label: r.user_id, value: r.count, text: num(r.count) })));
    $("sum-distinct").textContent = num(s.distinct_users) + " distinct users";
    barList($("sum-active"), s.most_active_services.map((r) => ({ label: r.service, value: r.count,
      text: num(r.count) + " · " + pct(r.error_rate) + " err", color: color(r.service) })));
    const trend = s.error_rate_trend;
    const lastIdx = trend.length - 1;
    const now = trend[lastIdx] || { error_rate: 0 };
    const prev = trend[lastIdx - 1] || { error_rate: 0 };
    const diff = now.error_rate - prev.error_rate;
    const dir = Math.abs(diff) < 0.0005 ? "flat" : diff > 0 ? "up" : "down";
    $("sum-trend-now").replaceChildren(pct(now.error_rate),
      el("span", { class: "delta " + dir, text: (dir === "up" ? "▲ " : dir === "down" ? "▼ " : "• ") + pct(Math.abs(diff)) }));
    const max = Math.max(0.01, ...trend.map((t) => t.error_rate));
    const hot = thresholds("").errorRate;
    $("sum-trend").replaceChildren(...trend.map((t) => {
      const col = el("div", { class: "col" + (t.error_rate > hot ? " hot" : ""), title: pct(t.error_rate) + " of " + num(t.total) });
      col.style.height = Math.max(3, (100 * t.error_rate) / max).toFixed(1) + "%";
      return el("li", null, [col, el("span", { text: clockTime(t.t).slice(0, 5) })]);
    }));
  }

  /* ---------- log search ---------- */
  function logParams() {
    const range = $("f-range").value;
    let since = null;
    let until = null;
    if (range === "custom") {
      if ($("f-since").value) since = new Date($("f-since").value).toISOString();
      if ($("f-until").value) until = new Date($("f-until").value).toISOString();
    } else {
      since = new Date(Date.now() - Number(range) * 1000).toISOString();
    }
    return { service: $("f-service").value, level: $("f-level").value, q: $("f-q").value.trim(), since, until, limit: 50 };
  }
  async function searchLogs(append) {
    const params = logParams();
    if (append) params.cursor = S.logs.cursor;
    const asked = ++S.logs.asked;
    const res = await getJSON("/api/v1/logs" + qs(params));
    pub.logAnswers += 1;
    if (asked !== S.logs.asked || !res || res.__missing) return;
    const rows = [];
    for (const log of res.logs) rows.push(...logRow(log));
    if (append) $("log-rows").append(...rows); else $("log-rows").replaceChildren(...rows);
    S.logs.cursor = res.next_cursor;
    S.logs.paged = !!append;
    $("logs-more").hidden = !res.next_cursor;
    $("logs-empty").hidden = $("log-rows").children.length > 0;
  }
  function logRow(log) {
    const lvl = String(log.level || "");
    const tr = el("tr", { class: "log", dataset: { id: String(log.id), level: lvl, service: log.service || "" } }, [
      el("td", { class: "time", text: dateTime(log.timestamp), title: log.timestamp }),
      el("td", null, [el("span", { class: "lvl lvl-" + lvl, text: lvl })]),
      el("td", { text: log.service }),
      el("td", { class: "msg", text: log.message }),
      el("td", { class: "mono", text: log.user_id }),
      el("td", { class: "mono", text: log.ip_address }),
      el("td", { class: "num", text: log.response_time_ms == null ? "" : num(log.response_time_ms) }),
      el("td", { class: "mono", text: log.trace_id ? String(log.trace_id).slice(0, 12) : "", title: log.trace_id }),
    ]);
    const detail = el("tr", { class: "detail", hidden: "" }, [el("td", { colspan: "8" }, [el("pre", { text: JSON.stringify(log, null, 2) })])]);
    tr.addEventListener("click", () => { detail.hidden = !detail.hidden; });
    return [tr, detail];
  }
  function refreshLogsIfLive() {
    if ($("f-live").checked && !S.logs.paged && $("f-range").value !== "custom" && !$("pane-logs").hidden) searchLogs(false);
  }
  $("log-form").addEventListener("submit", (e) => { e.preventDefault(); searchLogs(false); });
  $("logs-more").addEventListener("click", () => searchLogs(true));
  $("f-range").addEventListener("change", () => {
    const custom = $("f-range").value === "custom";
    document.querySelectorAll(".custom-range").forEach((n) => { n.hidden = !custom; });
    if (!custom) searchLogs(false);
  });
  for (const id of ["f-service", "f-level"]) $(id).addEventListener("change", () => searchLogs(false));

  /* ---------- dead letters ---------- */
  async function refreshDeadLetters(append) {
    const params = { reason: $("d-reason").value.trim(), limit: 50 };
    if (append) params.cursor = S.dead.cursor;
    const asked = ++S.dead.asked;
    const res = await getJSON("/api/v1/dead-letter" + qs(params));
    if (asked !== S.dead.asked || !res || res.__missing) return;
    const rows = res.dead_letters.map((d) => el("tr", { dataset: { id: String(d.id) } }, [
      el("td", { class: "time", text: dateTime(d.received_at), title: d.received_at }),
      el("td", { text: d.source }),
      el("td", { class: "msg", text: d.reason }),
      el("td", { class: "raw", text: d.raw && d.raw.length > 400 ? d.raw.slice(0, 400) + "…" : d.raw }),
    ]));
    if (append) $("dead-rows").append(...rows); else $("dead-rows").replaceChildren(...rows);
    S.dead.cursor = res.next_cursor;
    $("dead-more").hidden = !res.next_cursor;
    $("dead-total").textContent = num(res.total);
    $("dead-empty").hidden = $("dead-rows").children.length > 0;
  }
  $("dead-form").addEventListener("submit", (e) => { e.preventDefault(); refreshDeadLetters(false); });
  $("dead-more").addEventListener("click", () => refreshDeadLetters(true));

  /* ---------- tabs ---------- */
  function selectTab(which) {
    const logs = which === "logs";
    $("tab-logs").setAttribute("aria-selected", String(logs));
    $("tab-dead").setAttribute("aria-selected", String(!logs));
    $("pane-logs").hidden = !logs;
    $("pane-dead").hidden = logs;
  }
  $("tab-logs").addEventListener("click", () => selectTab("logs"));
  $("tab-dead").addEventListener("click", () => { selectTab("dead"); refreshDeadLetters(false); });

  /* ---------- start ---------- */
  // Between pushes the window still slides (new minute) and silence still grows: a slow poll.
  setInterval(() => { if (S.conn === "live") { refreshCharts(); refreshServices(); refreshSummary(); } }, 15000);
  setInterval(() => { if (S.alerts.size) renderAlerts(); }, 5000);  // keep "since … ago" current
  renderAlerts();
  renderAnomalies();
  loadConfig().then(connect);  // a 401 here (token required, no session) leads to the sign-in form
})();
