// The console's live parts: numbers and charts that follow the server
// every two seconds, and the log stream. No inline scripts (the page's
// Content-Security-Policy allows only these files).
(function () {
  "use strict";
  const every = 2000;

  function chart(el, label, color, height) {
    if (!el || !window.uPlot) return null;
    const w = Math.max(el.clientWidth || 260, 120);
    return new uPlot({
      width: w, height: height || 150,
      legend: { show: height === undefined },
      cursor: { show: height === undefined },
      axes: height === undefined ? [{}, {}] : [{ show: false }, { show: false }],
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(hi + 1, 4)] } },
      series: [{}, { label: label, stroke: color, fill: color + "22", width: 2 }],
    }, [[], []], el);
  }

  function push(series, t, v, keep) {
    series[0].push(t); series[1].push(v);
    if (series[0].length > keep) { series[0].shift(); series[1].shift(); }
  }

  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } });
    if (r.status === 401) { location.href = "/console/signin"; throw new Error("signed out"); }
    if (!r.ok) throw new Error(r.status);
    return r.json();
  }

  // The apps list: state, gears, connections and a sparkline per app.
  function appsList() {
    const table = document.getElementById("apps");
    if (!table) return;
    const sparks = {};
    const hist = {};
    table.querySelectorAll("[data-spark]").forEach((el) => {
      const k = el.dataset.spark;
      hist[k] = [[], []];
      sparks[k] = chart(el, "connections", "#2463c7", 34);
    });
    async function tick() {
      try {
        const apps = await getJSON("/console/live.json");
        const t = Date.now() / 1000;
        for (const a of apps) {
          const row = table.querySelector(`tr[data-app="${CSS.escape(a.app)}"]`);
          if (!row) continue;
          row.querySelector(".state").textContent = a.state + (a.idle ? " (idle)" : "");
          row.querySelector(".gears").textContent = a.gears;
          row.querySelector(".conns").textContent = a.connections;
          if (hist[a.app]) {
            push(hist[a.app], t, a.connections, 90);
            if (sparks[a.app]) sparks[a.app].setData(hist[a.app]);
          }
        }
      } catch (e) { /* the next tick tries again */ }
    }
    tick();
    setInterval(tick, every);
  }

  // An app page: its state now (every 2 s), and charts of the last hour
  // from the server's own metrics (every 5 s).
  function appPage() {
    const title = document.querySelector("[data-live]");
    if (!title) return;
    const charts = document.querySelector("[data-stats]");
    const rps = chartN(document.getElementById("chart-rps"), [["req/s", "#2463c7"]]);
    const lat = chartN(document.getElementById("chart-latency"), [["p50", "#1f7a3d"], ["p99", "#b42318"]]);
    const cc = chartN(document.getElementById("chart-conns"), [["connections", "#2463c7"]]);
    const cg = chartN(document.getElementById("chart-gears"), [["gears", "#1f7a3d"]]);
    let conns = [[], []], gears = [[], []];
    async function history() {
      try {
        const st = await getJSON(charts.dataset.stats);
        const x = st.samples.map((s) => Date.parse(s.t) / 1000);
        if (rps) rps.setData([x, st.samples.map((s) => s.rps)]);
        if (lat) lat.setData([x, st.samples.map((s) => s.p50_ms), st.samples.map((s) => s.p99_ms)]);
        conns = [x, st.samples.map((s) => s.connections)];
        gears = [x, st.samples.map((s) => s.gears)];
      } catch (e) { /* the next tick tries again */ }
    }
    // The numbers now: from the gears table htmx refreshes every 2 s
    // (one request a page for both).
    function now() {
      const table = document.getElementById("gear-table");
      if (!table) return;
      const t = Date.now() / 1000;
      const a = { state: table.dataset.state, connections: +table.dataset.connections, gears: +table.dataset.web };
      document.getElementById("state").textContent = a.state;
      if (cc) cc.setData([conns[0].concat([t]), conns[1].concat([a.connections])]);
      if (cg) cg.setData([gears[0].concat([t]), gears[1].concat([a.gears])]);
      const n = document.getElementById("gear-count");
      if (n) n.textContent = a.gears;
      title.dataset.connections = a.connections;
      title.dataset.gears = a.gears;
    }
    document.addEventListener("htmx:after:swap", now);
    history().then(now);
    setInterval(history, 5000);
  }

  function chartN(el, series) {
    if (!el || !window.uPlot) return null;
    return new uPlot({
      width: Math.max(el.clientWidth || 260, 120), height: 150,
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(hi * 1.1, 1)] } },
      series: [{}].concat(series.map(([label, color]) => ({ label: label, stroke: color, fill: series.length === 1 ? color + "22" : undefined, width: 2 }))),
    }, [[]].concat(series.map(() => [])), el);
  }

  // Live logs: every gear's lines as they come, with a filter and pause.
  function logs() {
    const pre = document.getElementById("log");
    if (!pre) return;
    const filter = document.getElementById("log-filter");
    const pauseBtn = document.getElementById("log-pause");
    let paused = false, held = [];
    const lines = [];
    function show(l) {
      const text = `${l.time ? l.time.substring(11, 19) : ""} ${l.process || ""}/${(l.gear || "").substring(0, 8)} ${l.text || ""}`;
      const f = filter.value.trim();
      const div = document.createElement("div");
      div.textContent = text;
      if (l.stream === "stderr") div.className = "err";
      div.hidden = f !== "" && !text.includes(f);
      pre.appendChild(div);
      lines.push(div);
      if (lines.length > 5000) lines.shift().remove();
      if (!paused) pre.scrollTop = pre.scrollHeight;
    }
    const es = new EventSource(pre.dataset.stream);
    es.onmessage = (ev) => {
      let l;
      try { l = JSON.parse(ev.data); } catch (e) { return; }
      if (paused) held.push(l); else show(l);
    };
    filter.addEventListener("input", () => {
      const f = filter.value.trim();
      for (const d of lines) d.hidden = f !== "" && !d.textContent.includes(f);
    });
    pauseBtn.addEventListener("click", () => {
      paused = !paused;
      pauseBtn.textContent = paused ? `Resume` : "Pause";
      if (!paused) { held.forEach(show); held = []; }
    });
  }

  // A terminal in a gear: keys out, screen in, over one WebSocket.
  function terminal() {
    const el = document.getElementById("term");
    if (!el || !window.Terminal) return;
    const term = new Terminal({ cursorBlink: true, fontSize: 14, convertEol: false });
    term.open(el);
    const cols = Math.max(40, Math.floor((el.clientWidth - 16) / 9));
    const rows = Math.max(12, Math.floor((window.innerHeight * 0.6) / 18));
    term.resize(cols, rows);
    const gear = new URLSearchParams(location.search).get("gear") || "";
    const sel = document.getElementById("term-gear");
    if (sel && gear) sel.value = gear;
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + el.dataset.ws +
      "?cols=" + cols + "&rows=" + rows + (gear ? "&gear=" + encodeURIComponent(gear) : "");
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const enc = new TextEncoder();
    ws.onopen = () => { el.dataset.state = "open"; term.focus(); };
    ws.onmessage = (e) => term.write(new Uint8Array(e.data));
    ws.onclose = (e) => { el.dataset.state = "closed"; term.write("\r\n[" + (e.reason || "the connection closed") + "]\r\n"); };
    term.onData((d) => { if (ws.readyState === 1) ws.send(enc.encode(d)); });
    term.onResize((s) => { if (ws.readyState === 1) ws.send(JSON.stringify({ cols: s.cols, rows: s.rows })); });
    window.gantryTerminal = term; // the tests read the screen
  }

  // Copy buttons: the text of the element they name.
  function copyButtons() {
    document.querySelectorAll("[data-copy]").forEach((b) => b.addEventListener("click", async () => {
      const el = document.getElementById(b.dataset.copy);
      try { await navigator.clipboard.writeText(el.textContent); b.textContent = "Copied"; } catch (e) { b.textContent = "Select and copy"; }
    }));
  }

  document.addEventListener("DOMContentLoaded", () => { appsList(); appPage(); logs(); terminal(); copyButtons(); });
})();
