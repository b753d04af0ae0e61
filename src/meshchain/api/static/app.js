// meshchain dashboard: this node's JSON-RPC API (POST /) for state, its WebSocket
// (/websocket) for new blocks, transactions and peer changes. No library, no other
// origin; every list and chart is capped so a tab left open for days stays small.
// Text from the node (and from other nodes it asked) goes into the page as text only.
"use strict";

(() => {
  const MAX_BLOCKS = 20; // rows in "Latest blocks"
  const MAX_TXS = 50; // rows in "Transactions"
  const MAX_CHART_HEIGHTS = 30; // heights in the propagation and finality charts
  const MAX_MEMPOOL_POINTS = 120; // samples in the mempool chart
  const MEMPOOL_TXIDS = 10; // transaction ids listed under the mempool chart
  const POLL_MS = 5000; // status, peers and topology even when no event comes
  const TIMES_MIN_MS = 2000; // propagation asks every node: at most this often
  const TOPOLOGY_MIN_MS = 3000;
  const RECONNECT_MIN_MS = 1000; // WebSocket reconnect backoff, doubling...
  const RECONNECT_MAX_MS = 10000; // ...up to this
  const RPC_TIMEOUT_MS = 10000;
  const COIN = 1e8; // base units per coin
  // A scatter's axis stops at this multiple of its 90th percentile; points beyond it are
  // drawn on the top edge as triangles and counted, so one slow block hides no others.
  const CLIP_OVER_P90 = 4;
  const EVENTS = ["new_block", "new_tx", "peer"];
  const COLORS = ["#5fb3f9", "#e0b552", "#6cc070", "#e86b6b", "#b48ead", "#88c0d0",
    "#d08770", "#a3be8c", "#ebcb8b", "#8fbcbb"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    tip: -1,
    blocks: new Map(), // height -> block row
    txs: new Map(), // hash -> tx row; insertion order is arrival order
    mempool: [], // [time ms, size]
    labels: new Map(), // node id -> label, from the topology
    finality: null, // the engine's finality depth (null: none)
    engine: "",
  };

  const $ = (id) => document.getElementById(id);

  // --- JSON-RPC over HTTP ----------------------------------------------------------------

  let nextId = 0;

  async function post(body) {
    const response = await fetch("/", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(RPC_TIMEOUT_MS),
    });
    return response.json();
  }

  async function rpc(method, params = {}) {
    const answer = await post({ jsonrpc: "2.0", id: ++nextId, method, params });
    if (answer.error) throw new Error(`${method}: ${answer.error.message}`);
    return answer.result;
  }

  // Several calls in one request; each result, or null where that call failed.
  async function batch(calls) {
    if (calls.length === 0) return [];
    const first = nextId + 1;
    const body = calls.map(([method, params]) =>
      ({ jsonrpc: "2.0", id: ++nextId, method, params: params || {} }));
    const answers = await post(body);
    const byId = new Map((Array.isArray(answers) ? answers : []).map((a) => [a.id, a]));
    return calls.map((_, i) => {
      const answer = byId.get(first + i);
      return answer && !answer.error ? answer.result : null;
    });
  }

  // Run `task` at most every `minMs`, never twice at once; calls meanwhile fold into one.
  function throttled(task, minMs) {
    let running = false;
    let again = false;
    let timer = null;
    let last = 0;
    const kick = () => {
      if (running || timer !== null) {
        again = true;
        return;
      }
      timer = setTimeout(async () => {
        timer = null;
        running = true;
        again = false; // this run covers every kick so far
        last = Date.now();
        try {
          await task();
        } catch (error) {
          showError(error);
        } finally {
          running = false;
          if (again) {
            again = false;
            kick();
          }
        }
      }, Math.max(0, last + minMs - Date.now()));
    };
    return kick;
  }

  function showError(error) {
    const box = $("error");
    box.textContent = String(error && error.message ? error.message : error);
    box.hidden = false;
  }

  // --- small DOM helpers -----------------------------------------------------------------

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "–" : String(text);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function svg(parent, name, attributes = {}, text = null) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (text !== null) node.textContent = text;
    parent.appendChild(node);
    return node;
  }

  const short = (hex, n = 12) => (typeof hex === "string" ? hex.slice(0, n) : "–");
  const clock = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "–");
  const coins = (units) => (typeof units === "number" ? (units / COIN).toLocaleString() : "–");

  function median(values) {
    if (values.length === 0) return null;
    const sorted = [...values].sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  }

  // --- status, blocks, transactions -------------------------------------------------------

  async function refreshStatus() {
    const [status, pool] = await batch([["status"], ["mempool", { limit: MEMPOOL_TXIDS }]]);
    if (status === null) throw new Error("status: no answer from the node");
    $("error").hidden = true;
    const sync = status.sync_info;
    const info = status.node_info;
    state.engine = info.engine;
    $("chain-name").textContent = `${info.chain_name} (${info.mode})`;
    $("engine").textContent = info.engine;
    $("node-id").textContent = short(info.id, 16);
    $("node-id").title = info.id;
    $("finalized").textContent = sync.finalized_height === null ? "none" : sync.finalized_height;
    $("peer-count").textContent = status.peers;
    showHeight(sync.latest_block_height);
    if (pool !== null) showMempool(pool);
    document.body.dataset.ready = "true";
  }

  function showHeight(height) {
    if (height <= state.tip) return;
    const missing = [];
    for (let h = Math.max(state.tip + 1, height - MAX_BLOCKS + 1, 0); h <= height; h++) {
      missing.push(h);
    }
    state.tip = height;
    $("height").textContent = height;
    loadBlocks(missing).catch(showError);
    kickTimes();
  }

  async function loadBlocks(heights) {
    const blocks = await batch(heights.map((height) => ["block", { height }]));
    for (const block of blocks) if (block !== null) addBlock(block);
    renderBlocks();
    renderTxs();
  }

  function addBlock(block) {
    state.blocks.set(block.height, {
      height: block.height,
      hash: block.hash,
      txs: block.tx_count,
      time: block.header.time_ms,
      from: block.header.beneficiary,
    });
    while (state.blocks.size > MAX_BLOCKS) {
      state.blocks.delete(Math.min(...state.blocks.keys()));
    }
    for (const hash of block.txs) {
      const known = state.txs.get(hash);
      if (known) {
        known.status = "committed";
        known.height = block.height;
      } else {
        addTx({ hash, status: "committed", height: block.height });
      }
    }
  }

  function addTx(tx) {
    state.txs.delete(tx.hash);
    state.txs.set(tx.hash, tx);
    while (state.txs.size > MAX_TXS) state.txs.delete(state.txs.keys().next().value);
  }

  function renderBlocks() {
    const body = $("blocks");
    body.replaceChildren();
    const rows = [...state.blocks.values()].sort((a, b) => b.height - a.height);
    for (const block of rows) {
      const row = document.createElement("tr");
      cell(row, block.height);
      cell(row, short(block.hash, 16), "hash").title = block.hash;
      cell(row, block.txs);
      cell(row, clock(block.time));
      cell(row, short(block.from, 14), "hash").title = block.from;
      body.appendChild(row);
    }
  }

  function renderTxs() {
    const body = $("txs");
    body.replaceChildren();
    for (const tx of [...state.txs.values()].reverse()) {
      const row = document.createElement("tr");
      row.className = tx.status;
      row.dataset.hash = tx.hash;
      cell(row, tx.hash, "hash").title = tx.sender ? `${tx.sender} → ${tx.recipient}` : tx.hash;
      cell(row, coins(tx.amount));
      cell(row, tx.fee);
      cell(row, tx.status === "committed" ? `in #${tx.height}` : "pending", "status");
      body.appendChild(row);
    }
  }

  function showMempool(pool) {
    $("mempool-size").textContent = pool.size;
    $("mempool-bytes").textContent = `${pool.size} txs, ${pool.bytes.toLocaleString()} bytes`;
    const now = Date.now();
    state.mempool.push([now, pool.size]);
    if (state.mempool.length > MAX_MEMPOOL_POINTS) state.mempool.shift();
    const list = $("mempool-txids");
    list.replaceChildren();
    for (const txid of pool.txids) {
      const item = document.createElement("li");
      item.textContent = txid;
      list.appendChild(item);
    }
    const points = state.mempool.map(([t, size]) => [(t - now) / 1000, size]);
    chart($("mempool-chart"), [{ label: "transactions", color: COLORS[0], points }], {
      x: "seconds (0: now)", y: "txs", line: true, empty: "no sample yet",
    });
  }

  // --- peers and topology ----------------------------------------------------------------

  async function refreshTopology() {
    const [topology, net] = await batch([["topology"], ["net_info"]]);
    if (net !== null) renderPeers(net.peers);
    if (topology !== null) renderTopology(topology);
  }

  function renderPeers(peers) {
    const body = $("peers");
    body.replaceChildren();
    for (const peer of peers) {
      const row = document.createElement("tr");
      cell(row, short(peer.node_id, 12), "hash").title = peer.node_id;
      cell(row, peer.address);
      cell(row, peer.direction);
      cell(row, peer.kind);
      cell(row, peer.ping_ms === null ? null : peer.ping_ms.toFixed(1));
      cell(row, Math.round(peer.connected_seconds));
      body.appendChild(row);
    }
  }

  function renderTopology(topology) {
    const graph = $("topology");
    graph.replaceChildren();
    const defs = svg(graph, "defs");
    const marker = svg(defs, "marker", {
      id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5",
      markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse",
    });
    svg(marker, "path", { d: "M 0 0 L 10 5 L 0 10 z", class: "edge-arrow" });
    const nodes = [...topology.nodes].sort((a, b) =>
      (b.self - a.self) || ((b.reachable !== null) - (a.reachable !== null))
      || String(a.label).localeCompare(String(b.label)));
    const where = new Map();
    const [cx, cy, rx, ry] = [320, 180, 250, 135];
    nodes.forEach((node, i) => {
      const angle = -Math.PI / 2 + (2 * Math.PI * i) / nodes.length;
      const at = nodes.length === 1 ? [cx, cy] : [cx + rx * Math.cos(angle), cy + ry * Math.sin(angle)];
      where.set(node.id, at);
      state.labels.set(node.id, node.label);
    });
    const radius = 15;
    for (const edge of topology.edges) {
      const [a, b] = [where.get(edge.source), where.get(edge.target)];
      if (!a || !b) continue;
      const length = Math.hypot(b[0] - a[0], b[1] - a[1]) || 1;
      const [ux, uy] = [(b[0] - a[0]) / length, (b[1] - a[1]) / length];
      const line = svg(graph, "line", {
        x1: a[0] + ux * radius, y1: a[1] + uy * radius,
        x2: b[0] - ux * radius, y2: b[1] - uy * radius,
        class: "edge", "marker-end": "url(#arrow)",
      });
      const ping = edge.ping_ms === null || edge.ping_ms === undefined ? "" : `, ${edge.ping_ms} ms`;
      svg(line, "title", {}, `${edge.kind || "?"}${ping}`);
    }
    for (const node of nodes) {
      const [x, y] = where.get(node.id);
      let kind = "node";
      if (node.self) kind += " self";
      else if (node.reachable === false) kind += " down";
      else if (node.reachable === null) kind += " unknown";
      const group = svg(graph, "g", { class: kind });
      svg(group, "circle", { cx: x, cy: y, r: radius });
      const height = node.height === undefined || node.height === null ? "" : `#${node.height}`;
      svg(group, "text", { x, y: y + 4, "text-anchor": "middle" }, height);
      svg(group, "text", { x, y: y + radius + 13, "text-anchor": "middle" }, String(node.label));
      const about = [node.id, node.api, node.error].filter(Boolean).join("\n");
      svg(group, "title", {}, about);
    }
    const down = topology.nodes.filter((n) => n.reachable === false).length;
    const scope = topology.network
      ? "the whole network, each node asked"
      : "this node and its peers ([api] network lists no other nodes)";
    $("topology-note").textContent = `${topology.nodes.length} nodes, ${topology.edges.length}`
      + ` links (dialer → listener): ${scope}${down ? `; ${down} not answering` : ""}`
      + `${topology.truncated ? "; truncated" : ""}`;
  }

  // --- propagation and finality ----------------------------------------------------------

  async function refreshTimes() {
    const propagation = await rpc("propagation");
    const nodes = propagation.nodes;
    const own = nodes.find((node) => node.self);
    const heights = new Set();
    for (const node of nodes) for (const b of node.blocks) heights.add(b.height);
    const shown = [...heights].sort((a, b) => b - a).slice(0, MAX_CHART_HEIGHTS);
    const lowest = shown.length ? Math.min(...shown) : 0;
    const series = (pick) => nodes.map((node, i) => ({
      label: node.self ? "this node" : state.labels.get(node.node_id) || node.api || "?",
      color: COLORS[i % COLORS.length],
      points: node.blocks.filter((b) => b.height >= lowest && pick(b) !== null)
        .map((b) => [b.height, pick(b)]),
    }));
    const seen = series((b) => b.seen_ms - b.time_ms);
    chart($("propagation"), seen, { x: "height", y: "ms", empty: "no block seen yet" });
    const failed = nodes.filter((node) => node.error).map((node) => `${node.api}: ${node.error}`);
    $("propagation-note").textContent = summary(seen) + (failed.length ? ` Not answering: ${failed.join("; ")}` : "");
    state.finality = own ? own.finality_depth : null;
    if (state.finality === null) {
      chart($("finality"), [], {
        x: "height", y: "ms",
        empty: `no finality rule on this chain (engine ${own ? own.engine : "?"}): any block can be outrun`,
      });
      $("finality-note").textContent = "";
      return;
    }
    const final = series((b) => (b.final_ms === null || b.final_ms === undefined ? null : b.final_ms - b.time_ms));
    chart($("finality"), final, { x: "height", y: "ms", empty: "no block final yet" });
    const depth = state.finality === 0 ? "committed (BFT)" : `${state.finality} blocks deep`;
    $("finality-note").textContent = `${summary(final)} A block is final once ${depth}.`;
  }

  function summary(series) {
    const values = series.flatMap((s) => s.points.map((p) => p[1]));
    if (values.length === 0) return "";
    const nodes = series.filter((s) => s.points.length).length;
    return `median ${Math.round(median(values))} ms, max ${Math.round(Math.max(...values))} ms`
      + ` over ${values.length} measurements at ${nodes} node${nodes === 1 ? "" : "s"}.`;
  }

  // A scatter (or line) chart of series of [x, y] points, with axes and a legend.
  function chart(target, series, options) {
    target.replaceChildren();
    const [width, height] = [target.viewBox.baseVal.width, target.viewBox.baseVal.height];
    const pad = { left: 46, right: 10, top: 18, bottom: 26 };
    const points = series.flatMap((s) => s.points);
    if (points.length === 0) {
      svg(target, "text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" },
        options.empty);
      return;
    }
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
    const y0 = Math.min(0, ...ys);
    const highest = Math.max(...ys, 1);
    const p90 = [...ys].sort((a, b) => a - b)[Math.floor(0.9 * (ys.length - 1))];
    const clipAt = options.line ? highest : Math.max(p90, 1) * CLIP_OVER_P90;
    const y1 = niceCeiling(Math.min(highest, clipAt));
    const clipped = ys.filter((y) => y > y1).length;
    const sx = (x) => pad.left + ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
    const sy = (y) => height - pad.bottom - ((Math.min(y, y1) - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
    for (let i = 0; i <= 4; i++) {
      const y = y0 + ((y1 - y0) * i) / 4;
      svg(target, "line", { x1: pad.left, x2: width - pad.right, y1: sy(y), y2: sy(y), class: "grid-line" });
      svg(target, "text", { x: pad.left - 4, y: sy(y) + 4, "text-anchor": "end" }, formatNumber(y));
    }
    svg(target, "line", { x1: pad.left, x2: width - pad.right, y1: sy(y0), y2: sy(y0), class: "axis" });
    svg(target, "text", { x: pad.left, y: height - 8 }, formatNumber(x0));
    svg(target, "text", { x: width - pad.right, y: height - 8, "text-anchor": "end" }, formatNumber(x1));
    svg(target, "text", { x: width / 2, y: height - 8, "text-anchor": "middle" }, options.x);
    svg(target, "text", { x: 4, y: 12 }, options.y);
    if (clipped) {
      const above = `▲ ${clipped} above ${formatNumber(y1)}, up to ${formatNumber(highest)} ${options.y}`;
      svg(target, "text", { x: pad.left + 4, y: pad.top + 10, class: "clipped" }, above);
    }
    let legendX = width - pad.right;
    for (const s of [...series].reverse()) {
      if (s.points.length === 0) continue;
      const label = svg(target, "text", { x: legendX, y: 12, "text-anchor": "end", fill: s.color }, s.label);
      legendX -= label.getComputedTextLength() + 12;
      const sorted = [...s.points].sort((a, b) => a[0] - b[0]);
      if (options.line || sorted.length > 1) {
        svg(target, "polyline", {
          points: sorted.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" "),
          class: "series", stroke: s.color, "stroke-opacity": options.line ? "1" : "0.45",
        });
      }
      if (!options.line) {
        for (const [x, y] of sorted) {
          const [px, py] = [sx(x), sy(y)];
          const dot = y > y1
            ? svg(target, "path", { d: `M ${px - 4} ${py + 4} L ${px} ${py - 3} L ${px + 4} ${py + 4} z`, fill: s.color })
            : svg(target, "circle", { cx: px, cy: py, r: 2.8, fill: s.color });
          svg(dot, "title", {}, `${s.label}: ${formatNumber(y)} ${options.y} at ${options.x} ${x}`);
        }
      }
    }
  }

  function niceCeiling(value) {
    const step = 10 ** Math.floor(Math.log10(value));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
    return 10 * step;
  }

  const formatNumber = (n) => (Math.abs(n) >= 100 || Number.isInteger(n) ? Math.round(n) : n.toFixed(1));

  // --- the WebSocket ---------------------------------------------------------------------

  let backoff = RECONNECT_MIN_MS;

  function setLive(on, text) {
    const badge = $("live");
    badge.className = `badge ${on ? "on" : "off"}`;
    badge.textContent = text;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/websocket`);
    socket.onopen = () => {
      backoff = RECONNECT_MIN_MS;
      setLive(true, "live");
      EVENTS.forEach((event, i) => socket.send(JSON.stringify(
        { jsonrpc: "2.0", id: `subscribe-${i}`, method: "subscribe", params: { event } })));
      kickStatus(); // whatever happened while we were away
      kickTopology();
    };
    socket.onmessage = (message) => {
      let note;
      try {
        note = JSON.parse(message.data);
      } catch {
        return;
      }
      if (note.error) showError(new Error(`subscribe: ${note.error.message}`));
      if (note.method === "subscription") onEvent(note.params.event, note.params.result);
    };
    socket.onclose = () => {
      setLive(false, `reconnecting in ${Math.round(backoff / 1000)} s`);
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, RECONNECT_MAX_MS);
    };
  }

  let received = 0;

  function onEvent(event, result) {
    $("live").dataset.events = ++received; // notifications so far (tests read it)
    if (event === "new_block") {
      showHeight(result.height);
      kickStatus();
    } else if (event === "new_tx") {
      if (!state.txs.has(result.hash)) {
        addTx({ ...result, status: "pending" });
        renderTxs();
      }
    } else if (event === "peer") {
      kickTopology();
    }
  }

  const kickStatus = throttled(refreshStatus, 500);
  const kickTopology = throttled(refreshTopology, TOPOLOGY_MIN_MS);
  const kickTimes = throttled(refreshTimes, TIMES_MIN_MS);

  function start() {
    kickStatus();
    kickTopology();
    connect();
    setInterval(() => {
      kickStatus();
      kickTopology();
      kickTimes();
    }, POLL_MS);
  }

  start();
})();
