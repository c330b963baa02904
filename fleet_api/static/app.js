/* dcm fleet dashboard: plain JavaScript over /api/v1 and the vendored Leaflet (no CDN, no framework). */
"use strict";
(function () {
  const COLORS = { moving: "#1a9850", parked: "#2c7bb6", offline: "#9e9e9e", event: "#d7191c" };
  const $ = (id) => document.getElementById(id);
  const state = { token: null, vehicles: new Map(), markers: new Map(), selected: null, trip: null, fitted: false };
  window.dcmDashboard = state; // for tests and curious people

  function readToken() {
    const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem("dcm-token", decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname); // keep the token out of the address bar
    }
    return sessionStorage.getItem("dcm-token");
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
    return e;
  }

  async function api(path, options) {
    const resp = await fetch("/api/v1" + path, Object.assign({ headers: { Authorization: "Bearer " + state.token } }, options || {}));
    if (resp.status === 401) { showLogin("token refused"); throw new Error("unauthorized"); }
    const body = await resp.json();
    if (!resp.ok) throw Object.assign(new Error(body.message || resp.statusText), { status: resp.status });
    return body;
  }

  async function retrying(fn, what) {
    for (let i = 0; i < 60; i++) {
      try { return await fn(); } catch (e) {
        if (e.status !== 503) { status(what + ": " + e.message); return null; }
        status(what + ": " + e.message + " (retrying)");
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    return null;
  }

  function status(text) { $("status").textContent = text; }
  function showLogin(why) { $("login").hidden = false; status(why || "give an API token"); }
  const fmtTime = (iso) => iso ? iso.replace("T", " ").replace("Z", "").slice(0, 16) : "—";
  const fmtTs = (t) => fmtTime(new Date(t * 1000).toISOString());
  const short = (id) => id ? id.slice(0, 8) : "—";

  // -- map --------------------------------------------------------------------------------------
  const map = L.map("map", { zoomControl: true, attributionControl: false, preferCanvas: false }).setView([48.14, 11.58], 11);
  const tileUrl = document.body.dataset.tileUrl;
  if (tileUrl && tileUrl.indexOf("{z}") >= 0) L.tileLayer(tileUrl, { maxZoom: 19 }).addTo(map);
  const tripLayer = L.layerGroup().addTo(map);
  const vehicleLayer = L.layerGroup().addTo(map);

  function drawVehicle(v) {
    state.vehicles.set(v.id, v);
    if (!v.position) return;
    const ll = [v.position.lat, v.position.lon];
    let m = state.markers.get(v.id);
    if (!m) {
      m = L.circleMarker(ll, { radius: 8, weight: 2, color: "#fff", fillOpacity: 0.95, className: "vehicle-marker" })
        .on("click", () => selectVehicle(v.id)).addTo(vehicleLayer);
      state.markers.set(v.id, m);
    }
    m.setLatLng(ll).setStyle({ fillColor: COLORS[v.status] || COLORS.offline });
    m.bindTooltip(`${v.plate || short(v.id)} · ${v.status}`);
    if (m.getElement()) m.getElement().setAttribute("data-vehicle", v.id);
  }

  function fitVehicles() {
    const pts = [...state.vehicles.values()].filter((v) => v.position).map((v) => [v.position.lat, v.position.lon]);
    if (pts.length) map.fitBounds(L.latLngBounds(pts).pad(0.3), { maxZoom: 14 });
  }

  state.fitVehicles = fitVehicles;

  async function loadVehicles() {
    let cursor = null;
    do {
      const page = await api("/vehicles?limit=1000" + (cursor ? "&cursor=" + cursor : ""));
      page.items.forEach(drawVehicle);
      cursor = page.next_cursor;
    } while (cursor);
    if (!state.fitted) { fitVehicles(); state.fitted = true; }
    document.body.dataset.vehicles = String(state.markers.size);
  }

  // -- vehicle panel ----------------------------------------------------------------------------
  function sparkline(values) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 200 48");
    svg.setAttribute("preserveAspectRatio", "none");
    const ys = values.filter((x) => x != null);
    if (ys.length > 1) {
      const lo = Math.min(...ys), hi = Math.max(...ys), span = hi - lo || 1;
      const pts = values.map((y, i) => y == null ? null : `${(i / (values.length - 1)) * 200},${46 - ((y - lo) / span) * 44}`).filter(Boolean);
      const line = document.createElementNS(ns, "polyline");
      line.setAttribute("points", pts.join(" "));
      svg.append(line);
    }
    return svg;
  }

  async function selectVehicle(id) {
    state.selected = id;
    const panel = $("vehicle");
    panel.replaceChildren(el("p", { class: "muted" }, "loading…"));
    const v = await api(`/vehicles/${id}/latest`);
    const pos = v.position ? `${v.position.lat.toFixed(5)}, ${v.position.lon.toFixed(5)}` : "—";
    const dl = el("dl", {},
      el("dt", {}, "vehicle"), el("dd", {}, `${v.plate || ""} ${short(v.id)} (${v.model || "?"}, ${v.fleet || "no fleet"})`),
      el("dt", {}, "status"), el("dd", {}, `${v.status}, last seen ${fmtTime(v.last_seen)}`),
      el("dt", {}, "odometer"), el("dd", {}, v.odometer_km == null ? "—" : `${v.odometer_km.toFixed(1)} km`),
      el("dt", {}, "position"), el("dd", {}, pos),
      el("dt", {}, "DTCs"), el("dd", { id: "dtcs" }, v.active_dtcs.length ? v.active_dtcs.map((c) => "0x" + c.toString(16).toUpperCase()).join(", ") : "none"),
      el("dt", {}, "battery"), el("dd", {}, v.battery_v == null ? "—" : `${v.battery_v.toFixed(2)} V`));
    panel.replaceChildren(dl, el("div", { class: "muted" }, "battery voltage, last hour of data"), el("div", { id: "spark" }));
    if (v.last_seen && v.signals.BatteryVoltage) {
      const to = Math.floor(Date.parse(v.last_seen) / 1000) + 1;
      try {
        const s = await api(`/vehicles/${id}/series?signals=BatteryVoltage&from=${to - 3600}&to=${to}&step=10`);
        $("spark").replaceChildren(sparkline(s.signals.BatteryVoltage.mean));
      } catch (e) { $("spark").textContent = e.message; }
    } else {
      $("spark").replaceChildren(el("span", { class: "muted" }, "no battery voltage in this vehicle's data"));
    }
  }

  // -- trips ------------------------------------------------------------------------------------
  async function loadTrips() {
    const page = await retrying(() => api("/trips?limit=200"), "trips");
    if (!page) return;
    const body = $("trips").querySelector("tbody");
    body.replaceChildren(...page.items.map((t) => {
      const events = Object.entries(t).filter(([k, x]) => k.startsWith("n_") && x > 0).reduce((a, [, x]) => a + x, 0);
      return el("tr", { "data-trip": t.trip_id, onclick: () => openTrip(t.trip_id) },
        el("td", {}, fmtTs(t.start_t)), el("td", {}, t.plate || short(t.vehicle)), el("td", {}, t.driver_name || t.driver || "—"),
        el("td", {}, (t.distance_km || 0).toFixed(1)), el("td", {}, Math.round(t.duration_s / 60)), el("td", {}, t.score), el("td", {}, events));
    }));
    if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: "7", class: "muted" }, "no trips yet")));
  }

  async function openTrip(id) {
    const t = await api(`/trips/${encodeURIComponent(id)}`);
    state.trip = id;
    document.querySelectorAll("#trips tr.selected").forEach((r) => r.classList.remove("selected"));
    const row = document.querySelector(`#trips tr[data-trip="${CSS.escape(id)}"]`);
    if (row) row.classList.add("selected");
    tripLayer.clearLayers();
    const layer = L.geoJSON(t.route, {
      filter: (f) => f.geometry.type !== "LineString" || f.geometry.coordinates.length > 1,
      style: (f) => f.geometry.type === "LineString" ? { color: "#3e4c59", weight: 4, opacity: 0.85, className: "trip-route" } : {},
      pointToLayer: (f, ll) => L.circleMarker(ll, { radius: 7, color: "#fff", weight: 2, fillColor: COLORS.event, fillOpacity: 1, className: "event-pin" })
        .bindTooltip(`${f.properties.kind} (${f.properties.severity}) ${f.properties.peak_mps2.toFixed(1)} m/s²`),
    }).addTo(tripLayer);
    const b = layer.getBounds();
    if (b.isValid()) map.fitBounds(b.pad(0.2));
    document.body.dataset.trip = id;
    document.body.dataset.routePoints = String(t.route.features[0].geometry.coordinates.length);
    document.body.dataset.eventPins = String(t.route.features.length - 1);
  }

  // -- alerts -----------------------------------------------------------------------------------
  function alertItem(a) {
    const who = state.vehicles.get(a.vehicle);
    const acked = a.acknowledged_at != null;
    const li = el("li", { "data-alert": a.id, class: acked ? "acked" : "" },
      el("div", { class: "what" }, `${a.kind.replace(/_/g, " ")} · ${who && who.plate ? who.plate : short(a.vehicle)}`,
        el("small", {}, `${a.status}${acked ? ", acknowledged" : ""} · ${fmtTs(a.start)}`)));
    if (!acked) li.append(el("button", { class: "ack", onclick: () => acknowledge(a.id) }, "Ack"));
    return li;
  }

  function showAlert(a) {
    const list = $("alerts");
    const old = list.querySelector(`li[data-alert="${CSS.escape(a.id)}"]`);
    const li = alertItem(a);
    if (old) old.replaceWith(li); else list.prepend(li);
  }

  async function loadAlerts() {
    const page = await api("/alerts?state=all&limit=50");
    $("alerts").replaceChildren(...page.items.map(alertItem));
  }

  async function acknowledge(id) {
    const r = await api(`/alerts/${encodeURIComponent(id)}/ack`, { method: "POST" });
    showAlert(r.alert);
  }

  // -- leaderboard and year-to-date tiles ----------------------------------------------------------
  async function loadScores() {
    const s = await retrying(() => api("/scores?period=month&limit=20"), "scores");
    if (!s) return;
    $("period").textContent = s.start ? `month of ${s.start.slice(0, 7)}` : "";
    $("leaderboard").replaceChildren(...s.items.map((r) =>
      el("li", { title: r.explanation.map((e) => `${e.cause}: -${e.points}`).join(", ") },
        `${r.name || r.driver} `, el("span", { class: "muted" }, `${r.distance_km.toFixed(0)} km`), el("span", { class: "score" }, r.score))));
    if (!s.items.length) $("leaderboard").append(el("li", { class: "muted empty" }, "no scored drivers (no driver assignments)"));
  }

  async function loadTiles() {
    const y = await retrying(() => api("/views/yearly"), "views");
    if (!y) return;
    const d = y.ytd;
    const tile = (value, label) => el("div", { class: "tile" }, el("b", {}, value), el("span", {}, label));
    $("tiles").replaceChildren(tile(d.trips, `trips ${d.year}`), tile(d.distance_km.toFixed(0), "km"),
      tile(d.vehicles, "vehicles driven"), tile(d.harsh_events, "harsh events"), tile(d.driving_h.toFixed(1), "hours driving"));
  }

  // -- live stream (SSE over fetch, so the token goes in a header) -------------------------------
  async function live() {
    for (;;) {
      try {
        const resp = await fetch("/api/v1/stream", { headers: { Authorization: "Bearer " + state.token } });
        if (!resp.ok) throw new Error("stream " + resp.status);
        $("live").classList.add("on");
        const reader = resp.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
            const ev = /^event: (.*)$/m.exec(chunk), data = /^data: (.*)$/m.exec(chunk);
            if (!ev || !data) continue;
            const obj = JSON.parse(data[1]);
            if (ev[1] === "alert") showAlert(obj); else if (ev[1] === "position") drawVehicle(obj);
          }
        }
      } catch (e) { /* reconnect below */ }
      $("live").classList.remove("on");
      await new Promise((r) => setTimeout(r, 3000));
    }
  }

  async function start() {
    $("login").hidden = true;
    status("loading…");
    try {
      await loadVehicles();
      await loadAlerts();
      await Promise.all([loadTrips(), loadScores(), loadTiles()]);
      status(`${state.vehicles.size} vehicles`);
      document.body.dataset.readyMs = String(Math.round(performance.now()));
      document.body.dataset.ready = "1";
      live();
      setInterval(() => loadVehicles().catch(() => {}), 30000);
    } catch (e) {
      if (e.message !== "unauthorized") status(e.message);
    }
  }

  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("token-input").value.trim();
    sessionStorage.setItem("dcm-token", state.token);
    start();
  });
  state.token = readToken();
  if (state.token) start(); else showLogin();
})();
