package e2e

// nodeApp answers / with its version and GREETING, /pid with its process
// id, /env/NAME with a variable, and echoes WebSocket text messages: a
// minimal RFC 6455 server with Node's standard library only.
func nodeApp(version string) string {
	return `if (process.env.CRASH) { console.error("CRASH is set"); process.exit(1); }
if (process.env.CRASH_DIR && require("fs").existsSync(process.env.CRASH_DIR + "/" + process.env.PORT)) { console.error("crash file"); process.exit(3); }
const http = require("http");
const crypto = require("crypto");
// PROBE_AT_START=HOST:PORT: the app's very first act is a connection
// there; how it went is written to $GANTRY_DATA_DIR/probe-at-start-$PORT.
if (process.env.PROBE_AT_START) {
  const [host, port] = process.env.PROBE_AT_START.split(":");
  const file = process.env.GANTRY_DATA_DIR + "/probe-at-start-" + process.env.PORT;
  const s = require("net").connect({ host: host, port: +port, timeout: 3000 });
  s.on("connect", () => { require("fs").writeFileSync(file, "ok"); s.destroy(); });
  s.on("error", (e) => require("fs").writeFileSync(file, e.code || "error"));
  s.on("timeout", () => { require("fs").writeFileSync(file, "timeout"); s.destroy(); });
}
// A page that opens a WebSocket back to where it came from (wss on https)
// and shows the echo.
const wsPage = '<!doctype html><title>ws</title><p id="out">waiting</p><script>' +
  'const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");' +
  'ws.onopen = () => ws.send("hello from " + location.protocol);' +
  'ws.onmessage = (e) => { const p = document.getElementById("out"); p.textContent = "echo: " + e.data; p.id = "done"; };' +
  'ws.onerror = () => { document.getElementById("out").textContent = "websocket error"; };' +
  '</script>';
const server = http.createServer((req, res) => {
  if (req.url === "/pid") return res.end(String(process.pid));
  if (req.url.startsWith("/slow")) return setTimeout(() => res.end("slow\n"), 300);
  if (req.url === "/crash") { res.end("bye"); return setTimeout(() => process.kill(process.pid, "SIGKILL"), 50); }
  if (req.url.startsWith("/env/")) return res.end(process.env[req.url.slice(5)] || "");
  if (req.url === "/headers") return res.end(JSON.stringify(req.headers));
  if (req.url === "/page") { res.setHeader("Content-Type", "text/html"); return res.end(wsPage); }
  res.end("` + version + ` " + (process.env.GREETING || "") + "\n");
});
server.on("upgrade", (req, socket) => {
  const accept = crypto.createHash("sha1")
    .update(req.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
  socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n");
  let buf = Buffer.alloc(0);
  socket.on("data", (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 6) {
      const op = buf[0] & 15, len = buf[1] & 127;
      if (len > 125 || buf.length < 6 + len) return;
      const mask = buf.slice(2, 6), data = Buffer.from(buf.slice(6, 6 + len));
      for (let i = 0; i < len; i++) data[i] ^= mask[i % 4];
      buf = buf.slice(6 + len);
      if (op === 8) { socket.end(Buffer.from([0x88, 0])); return; }
      if (op === 1) socket.write(Buffer.concat([Buffer.from([0x81, len]), data]));
    }
  });
  socket.on("error", () => {});
});
setTimeout(() => server.listen(process.env.PORT, process.env.IP, () => console.log("listening on " + process.env.PORT)), +(process.env.START_DELAY_MS || 0));
// A second service, on a port of the kernel's choosing: it answers only
// after the client shuts down its write side (half-close).
const net = require("net");
net.createServer({ allowHalfOpen: true }, (s) => {
  let n = 0;
  s.on("data", (d) => { n += d.length; });
  s.on("end", () => s.end("got " + n + "\n"));
  s.on("error", () => {});
}).on("error", () => {}).listen(0, process.env.IP);
`
}

// hook appends its name to hooks.log in the app's data directory.
func hook(name string) string {
	return "#!/bin/sh\necho \"" + name + "\" >> \"$GANTRY_DATA_DIR/hooks.log\"\necho running " + name + "\n"
}

const pythonApp = `import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("python says " + os.environ.get("OPENSHIFT_APP_DNS", "?") + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

ThreadingHTTPServer((os.environ["OPENSHIFT_PYTHON_IP"], int(os.environ["OPENSHIFT_PYTHON_PORT"])), H).serve_forever()
`

// probeApp reports, from inside its gear, what the gear can and cannot do:
// connect, bind, read files, list processes, run commands, use memory and
// processes.
const probeApp = `const http = require("http"), net = require("net"), fs = require("fs"), cp = require("child_process");
const url = require("url");
const reply = (res, v) => { res.setHeader("Content-Type", "application/json"); res.end(JSON.stringify(v)); };
let hog = [];
http.createServer((req, res) => {
  const u = url.parse(req.url, true), q = u.query;
  switch (u.pathname) {
  case "/connect": {
    const [host, port] = q.addr.split(":");
    const opts = { host, port: +port, timeout: 3000 };
    if (q.from) opts.localAddress = q.from;
    const t0 = Date.now();
    const s = net.connect(opts, () => { s.destroy(); reply(res, { ok: true, ms: Date.now() - t0 }); });
    s.on("timeout", () => { s.destroy(); reply(res, { ok: false, error: "timeout", ms: Date.now() - t0 }); });
    s.on("error", (e) => reply(res, { ok: false, error: e.code, ms: Date.now() - t0 }));
    return;
  }
  case "/bind": {
    const srv = net.createServer();
    srv.on("error", (e) => reply(res, { ok: false, error: e.code }));
    srv.listen(0, q.ip, () => { srv.close(); reply(res, { ok: true }); });
    return;
  }
  case "/read":
    try { return reply(res, { ok: true, out: fs.readdirSync(q.path).join(" ") }); } catch (e) { return reply(res, { ok: false, error: e.code }); }
  case "/ps":
    return reply(res, fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map((p) => {
      try { return fs.readFileSync("/proc/" + p + "/cmdline", "utf8").replace(/\0/g, " ").trim(); } catch (e) { return ""; }
    }));
  case "/exec": {
    const r = cp.spawnSync("/bin/sh", ["-c", q.cmd], { encoding: "utf8", timeout: 10000 });
    return reply(res, { status: r.status, out: (r.stdout || "") + (r.stderr || "") });
  }
  case "/alloc":
    for (let i = 0; i < +q.mb; i++) { const b = Buffer.alloc(1 << 20, 1); hog.push(b); }
    return reply(res, { ok: true });
  case "/fork": {
    let ok = 0, failed = 0;
    const kids = [];
    for (let i = 0; i < +q.n; i++) {
      try { const k = cp.spawn("sleep", ["20"]); k.on("error", () => {}); if (k.pid) { ok++; kids.push(k); } else failed++; } catch (e) { failed++; }
    }
    setTimeout(() => { kids.forEach((k) => k.kill("SIGKILL")); reply(res, { ok, failed }); }, 300);
    return;
  }
  default:
    res.end("probe " + (process.env.GANTRY_APP_NAME || "") + "\n");
  }
}).listen(process.env.PORT, process.env.IP, () => console.log("probe listening on " + process.env.IP + ":" + process.env.PORT));
`
