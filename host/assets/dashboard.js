// Golconde's dashboard: asks the daemon for what it sampled (`api/series`) once a second
// and draws one card per pipeline with uPlot. Everything shown comes from the daemon as
// text and is set with textContent, never parsed as HTML. The daemon keeps ten minutes of
// samples, so a page opened late starts with them; after that only newer samples are
// asked for (`since`).
(function () {
  "use strict";

  const POLL_MS = 1000;
  const KEEP_S = 600;
  // Rates and means shown as numbers are over the last few samples, so they do not jump.
  const RECENT = 5;
  // The lag's trend is the slope over the last minute.
  const TREND_S = 60;

  const cards = new Map();
  let since = null;

  const list = document.getElementById("pipelines");
  const empty = document.getElementById("empty");
  const connection = document.getElementById("connection");
  const summary = document.getElementById("summary");

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function number(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return value.toLocaleString("en", {
      maximumFractionDigits: digits,
      minimumFractionDigits: 0,
    });
  }

  function recentMean(values) {
    const recent = values.slice(-RECENT).filter((v) => v !== null && v !== undefined);
    if (recent.length === 0) return null;
    return recent.reduce((a, b) => a + b, 0) / recent.length;
  }

  // Least-squares slope of the lag over the last TREND_S seconds, in messages per second.
  function trend(times, lags) {
    const end = times.length ? times[times.length - 1] : 0;
    let n = 0, st = 0, sl = 0, stt = 0, stl = 0;
    for (let i = 0; i < times.length; i++) {
      if (lags[i] === null || times[i] < end - TREND_S) continue;
      const t = times[i] - end;
      n += 1; st += t; sl += lags[i]; stt += t * t; stl += t * lags[i];
    }
    const d = n * stt - st * st;
    if (n < 3 || d === 0) return null;
    return (n * stl - st * sl) / d;
  }

  function width(node) {
    return Math.max(260, Math.floor(node.clientWidth || 300));
  }

  function chart(container, series, axes, scales) {
    const options = {
      width: width(container),
      height: 150,
      cursor: { drag: { x: false, y: false } },
      // Series names only: values show on the charts, and a live legend jumps about.
      legend: { live: false },
      scales: Object.assign({ x: { time: true } }, scales || {}),
      series: [{}].concat(series),
      axes: [{}].concat(axes),
    };
    const empties = [[]].concat(series.map(() => []));
    return new uPlot(options, empties, container);
  }

  function makeCard(name) {
    const card = element("section", "pipeline");
    card.dataset.pipeline = name;
    const header = element("header");
    header.append(element("h2", "name", name));
    const state = element("span", "state");
    const meta = element("span", "meta");
    header.append(state, meta);
    const numbers = element("div", "numbers");
    const figures = {};
    for (const [key, label] of [
      ["applied", "applied / s"],
      ["dead_lettered", "dead-lettered / s"],
      ["retried", "retried / s"],
      ["batch_size", "messages / batch"],
      ["apply_ms", "ms / apply"],
      ["lag", "lag"],
      ["in_flight", "in flight"],
      ["workers", "workers"],
    ]) {
      const box = element("div", "number " + key);
      const value = element("b", "value", "–");
      box.append(value, document.createTextNode(label));
      numbers.append(box);
      figures[key] = value;
    }
    const error = element("p", "error");
    error.hidden = true;
    const charts = element("div", "charts");
    const places = {};
    for (const [key, caption] of [
      ["throughput", "Messages per second"],
      ["lag", "Lag: messages ready on the queue"],
      ["batches", "Messages per batch (left axis), ms per apply (right axis)"],
    ]) {
      const figure = element("figure");
      figure.append(element("figcaption", "", caption));
      const place = element("div", "chart " + key);
      figure.append(place);
      charts.append(figure);
      places[key] = place;
    }
    card.append(header, numbers, error, charts);
    list.append(card);
    const entry = {
      card, state, meta, figures, error, places,
      data: { t: [], applied: [], dead_lettered: [], retried: [], lag: [], in_flight: [],
              workers: [], batch_size: [], apply_ms: [] },
    };
    entry.charts = {
      throughput: chart(places.throughput, [
        { label: "applied/s", stroke: "#1f8a4c", width: 2 },
        { label: "dead-lettered/s", stroke: "#c0392b", width: 2 },
        { label: "retried/s", stroke: "#b86e00", width: 2 },
      ], [{}]),
      lag: chart(places.lag, [
        { label: "lag", stroke: "#2c6fbb", width: 2, fill: "rgba(44,111,187,0.08)" },
        { label: "in flight", stroke: "#7d8a99", width: 1 },
      ], [{}]),
      batches: chart(places.batches, [
        { label: "messages/batch", stroke: "#7b4bb7", width: 2, scale: "n" },
        { label: "ms/apply", stroke: "#138086", width: 2, scale: "ms" },
      ], [{ scale: "n" }, { scale: "ms", side: 1, grid: { show: false } }]),
    };
    return entry;
  }

  function append(entry, points) {
    const data = entry.data;
    for (const key of Object.keys(data)) {
      const more = points[key] || [];
      for (const v of more) data[key].push(v);
    }
    const newest = data.t.length ? data.t[data.t.length - 1] : 0;
    let drop = 0;
    while (drop < data.t.length && data.t[drop] < newest - KEEP_S) drop++;
    if (drop > 0) for (const key of Object.keys(data)) data[key].splice(0, drop);
  }

  function describeProcess(process) {
    if (!process) return "threads";
    const parts = ["own process"];
    parts.push(process.pid ? "pid " + process.pid : "no process now");
    if (process.restarts) parts.push(process.restarts + " restart(s)");
    if (process.last_exit) parts.push("last " + process.last_exit);
    return parts.join(", ");
  }

  function update(entry, p) {
    append(entry, p.points);
    const data = entry.data;
    entry.card.dataset.state = p.state;
    entry.state.textContent = p.state;
    entry.state.className = "state " + p.state;

    entry.meta.textContent = "";
    entry.meta.append("queue ");
    entry.meta.append(element("code", "", p.queue || "?"));
    entry.meta.append(" · " + describeProcess(p.process));

    const shown = {
      applied: recentMean(data.applied),
      dead_lettered: recentMean(data.dead_lettered),
      retried: recentMean(data.retried),
      batch_size: recentMean(data.batch_size),
      apply_ms: recentMean(data.apply_ms),
    };
    for (const [key, value] of Object.entries(shown)) {
      entry.figures[key].textContent = number(value, 1);
      entry.figures[key].dataset.value = value === null ? "" : String(value);
    }
    const slope = trend(data.t, data.lag);
    let lag = p.lag === null ? "–" : number(p.lag, 0);
    // A falling lag that reached zero has caught up: no trend to show.
    if (p.lag && slope !== null && Math.abs(slope) >= 0.05) {
      lag += slope > 0 ? " ↗ +" + number(slope, 1) + "/s" : " ↘ " + number(-slope, 1) + "/s";
    }
    entry.figures.lag.textContent = lag;
    entry.figures.in_flight.textContent = number(p.in_flight, 0);
    entry.figures.workers.textContent = number(p.workers, 0);

    if (p.error) {
      const when = new Date(p.error.at).toLocaleTimeString("en-GB");
      entry.error.textContent = "Latest error, " + when + ": " + p.error.message;
      entry.error.hidden = false;
    } else {
      entry.error.hidden = true;
    }

    entry.charts.throughput.setData([data.t, data.applied, data.dead_lettered, data.retried]);
    entry.charts.lag.setData([data.t, data.lag, data.in_flight]);
    entry.charts.batches.setData([data.t, data.batch_size, data.apply_ms]);
  }

  function render(body) {
    const seen = new Set();
    for (const p of body.pipelines) {
      seen.add(p.name);
      let entry = cards.get(p.name);
      if (!entry) {
        entry = makeCard(p.name);
        cards.set(p.name, entry);
      }
      update(entry, p);
      const t = p.points.t;
      if (t.length) since = Math.max(since || 0, Math.round(t[t.length - 1] * 1000));
    }
    for (const [name, entry] of cards) {
      if (seen.has(name)) continue;
      for (const c of Object.values(entry.charts)) c.destroy();
      entry.card.remove();
      cards.delete(name);
    }
    // Cards in the daemon's order.
    for (const p of body.pipelines) list.append(cards.get(p.name).card);
    empty.hidden = cards.size > 0;
    const counts = {};
    for (const p of body.pipelines) counts[p.state] = (counts[p.state] || 0) + 1;
    summary.textContent = body.pipelines.length + " pipeline(s)" +
      Object.entries(counts).map(([s, n]) => " · " + n + " " + s).join("");
  }

  function connected(ok, text) {
    connection.className = "connection " + (ok ? "good" : "bad");
    connection.textContent = text;
  }

  async function poll() {
    try {
      const url = "api/series" + (since === null ? "" : "?since=" + since);
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401) {
        connected(false, "the daemon wants its token: open /?token=… once");
      } else if (!response.ok) {
        connected(false, "the daemon answered " + response.status);
      } else {
        render(await response.json());
        connected(true, "live, " + new Date().toLocaleTimeString("en-GB"));
      }
    } catch (e) {
      connected(false, "cannot reach the daemon (" + e.message + ")");
    }
    setTimeout(poll, POLL_MS);
  }

  window.addEventListener("resize", function () {
    for (const entry of cards.values()) {
      for (const [key, c] of Object.entries(entry.charts)) {
        c.setSize({ width: width(entry.places[key]), height: 150 });
      }
    }
  });

  poll();
})();
