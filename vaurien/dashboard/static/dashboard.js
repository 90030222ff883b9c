// The Vaurien dashboard. Every figure comes from one stream of samples (dashboard/events,
// about one a second); every change goes through the control API's own routes, as
// vaurien.Client sends them, and a refusal shows the API's message next to its field.
// No library and no build step: this file is served as it is.
"use strict";

const HISTORY_SECONDS = 300; // the most the charts show
const SHORTEST_CHART = 30; // seconds: a chart with less history is stretched to this
const FEED_LENGTH = 50; // faults listed

const state = {
  token: sessionStorage.getItem("vaurien-token"),
  interval: 1, // seconds between samples, as the stream says
  rateNames: [], // the order of the rates in a history point
  history: new Map(), // proxy name -> [[time, [rate, ...]], ...]
  cards: new Map(), // proxy name -> Card
  lastFault: 0, // the id of the newest fault listed
  stream: null, // the EventSource
};

function one(root, selector) {
  return root.querySelector(selector);
}

function element(tag, properties = {}, ...children) {
  const made = document.createElement(tag);
  Object.assign(made, properties);
  made.append(...children);
  return made;
}

// -- numbers ------------------------------------------------------------------------------

function formatBytes(value) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 && unit ? 1 : 0)} ${units[unit]}`;
}

function formatCount(value) {
  if (value >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (value >= 1e4) return `${(value / 1e3).toFixed(1)}k`;
  return value >= 10 || Number.isInteger(value) ? value.toFixed(0) : value.toFixed(1);
}

function formatTime(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString("en-GB", { hour12: false });
}

// -- the control API ----------------------------------------------------------------------

class RefusedError extends Error {
  constructor(message, field) {
    super(message);
    this.field = field;
  }
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let answer = null;
  try {
    answer = await response.json();
  } catch (error) {
    answer = null; // not JSON: the status says it all
  }
  if (response.status === 401) document.getElementById("token-form").hidden = false;
  if (!response.ok) {
    const refusal = answer && answer.errors && answer.errors[0];
    if (refusal) throw new RefusedError(refusal.description, refusal.name);
    throw new RefusedError(`${response.status} ${response.statusText}`, null);
  }
  return answer;
}

// -- charts -------------------------------------------------------------------------------

function pushPoint(name, time, rates) {
  if (!state.history.has(name)) state.history.set(name, []);
  const points = state.history.get(name);
  points.push([time, rates]);
  const kept = Math.ceil(HISTORY_SECONDS / state.interval) + 1;
  if (points.length > kept) points.splice(0, points.length - kept);
}

function drawChart(canvas, points, first, second, format) {
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  const ratio = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  const end = points.length ? points[points.length - 1][0] : Date.now() / 1000;
  const span = Math.min(HISTORY_SECONDS, Math.max(SHORTEST_CHART, end - (points[0] || [end])[0]));
  const start = end - span;
  const shown = points.filter(([time]) => time >= start);
  let top = 0;
  for (const [, rates] of shown) top = Math.max(top, rates[first], rates[second]);
  const scale = top > 0 ? top * 1.15 : 1;
  const style = getComputedStyle(canvas);
  context.strokeStyle = style.getPropertyValue("--grid");
  context.lineWidth = 1;
  context.beginPath();
  context.moveTo(0, height - 0.5);
  context.lineTo(width, height - 0.5);
  context.stroke();
  for (const [index, color] of [
    [first, "--to-backend"],
    [second, "--to-client"],
  ]) {
    context.beginPath();
    let previous = null;
    for (const [time, rates] of shown) {
      const x = ((time - start) / span) * width;
      const y = height - 1 - (rates[index] / scale) * (height - 16);
      // A gap in the samples (nobody watched) stays a gap.
      if (previous === null || time - previous > 2.5 * state.interval) context.moveTo(x, y);
      else context.lineTo(x, y);
      previous = time;
    }
    context.strokeStyle = style.getPropertyValue(color);
    context.lineWidth = 1.5;
    context.stroke();
  }
  context.fillStyle = style.getPropertyValue("--muted");
  context.font = "11px sans-serif";
  context.fillText(`peak ${format(top)}`, 4, 11);
}

// -- one proxy ----------------------------------------------------------------------------

class Card {
  constructor(name) {
    this.name = name;
    this.path = `proxies/${encodeURIComponent(name)}/`;
    const template = document.getElementById("proxy-template");
    this.root = template.content.firstElementChild.cloneNode(true);
    this.root.dataset.proxy = name;
    one(this.root, ".name").textContent = name;
    this.shares = new Map(); // mix entry ("delay", "delay+bandwidth") -> percent, as the form has it
    this.rows = new Map(); // mix entry -> its row's inputs
    this.fields = new Map(); // "behavior.option" -> {input, error, behavior}
    this.tables = null; // GET behaviors: every behavior's option table
    this.inForce = null; // the mix and options last seen in a sample, as JSON
    this.last = null; // the last sample of this proxy
    one(this.root, ".toggle").addEventListener("click", () =>
      this.change("enabled", { enabled: !this.last.enabled }),
    );
    one(this.root, ".reset").addEventListener("click", () => this.reset());
    this.dummyRow = this.makeRow("dummy", true);
    this.loadTables();
  }

  async loadTables() {
    try {
      this.tables = await api("GET", `${this.path}behaviors`);
    } catch (error) {
      this.showError(null, `cannot read the behaviors: ${error.message}`);
      return;
    }
    const body = one(this.root, ".mix tbody");
    for (const behavior of this.tables.behaviors) {
      if (behavior === "dummy") continue;
      body.append(this.row(behavior).row); // in the registry's order, whatever came first
      this.makeOptions(behavior, this.tables.options[behavior]);
    }
    for (const [entry, row] of this.rows) if (entry.includes("+")) body.append(row.row);
    body.append(this.dummyRow.row);
    if (this.last) this.sync(this.last);
  }

  // The mix: one row per behavior (and per chain in force), the rest going to dummy.

  makeRow(entry, rest = false) {
    const range = element("input", { type: "range", min: 0, max: 100, step: 1, value: 0 });
    const number = element("input", { type: "number", min: 0, max: 100, step: "any", value: 0 });
    const picks = element("td", { className: "picks" }, "0");
    const label = element("th", { scope: "row" }, entry);
    const row = element(
      "tr",
      {},
      label,
      element("td", {}, range),
      element("td", {}, number),
      picks,
    );
    row.dataset.behavior = entry;
    range.setAttribute("aria-label", `share of ${entry}`);
    number.setAttribute("aria-label", `percent of ${entry}`);
    if (rest) {
      range.disabled = number.disabled = true;
      label.append(element("span", { className: "muted" }, " (the rest)"));
    } else {
      range.addEventListener("input", () => this.setShare(entry, range.value));
      range.addEventListener("change", () => this.applyMix());
      number.addEventListener("change", () => {
        this.setShare(entry, number.value);
        this.applyMix();
      });
    }
    one(this.root, ".mix tbody").append(row);
    return { range, number, picks, row };
  }

  row(entry) {
    if (!this.rows.has(entry)) {
      this.rows.set(entry, this.makeRow(entry));
      one(this.root, ".mix tbody").append(this.dummyRow.row); // the rest stays last
      this.shares.set(entry, 0);
    }
    return this.rows.get(entry);
  }

  setShare(entry, value) {
    let percent = Number(value);
    if (!Number.isFinite(percent) || percent < 0) percent = 0;
    let others = 0;
    for (const [name, share] of this.shares) if (name !== entry) others += share;
    // The percents stay valid: what the others leave, at most.
    percent = Math.min(percent, Math.max(0, 100 - others));
    percent = Math.round(percent * 10000) / 10000;
    this.shares.set(entry, percent);
    const row = this.row(entry);
    row.range.value = percent;
    row.number.value = percent;
    this.showRest();
  }

  showRest() {
    let total = 0;
    for (const share of this.shares.values()) total += share;
    const rest = Math.round((100 - total) * 10000) / 10000;
    this.dummyRow.range.value = rest;
    this.dummyRow.number.value = rest;
  }

  mixBody() {
    const entries = [...this.shares].filter(([, percent]) => percent > 0);
    const name = entries.length
      ? entries.map(([entry, percent]) => `${percent}:${entry}`).join(",")
      : "dummy";
    const options = {};
    for (const [entry] of entries) {
      for (const behavior of entry.split("+")) options[behavior] = this.optionValues(behavior);
    }
    return { name, options };
  }

  applyMix() {
    return this.change("behavior", this.mixBody());
  }

  // Options: one field per option, typed from the option table the command line also uses.

  makeOptions(behavior, table) {
    const names = Object.keys(table);
    if (!names.length) return;
    const box = element("details", { className: "behavior-options" });
    box.dataset.behavior = behavior;
    box.append(element("summary", {}, behavior));
    for (const key of names) {
      const option = table[key];
      let input;
      if (option.type === "bool") {
        input = element("input", { type: "checkbox", checked: Boolean(option.default) });
      } else if (option.choices) {
        input = element("select");
        for (const choice of option.choices) {
          input.append(element("option", { value: String(choice) }, String(choice)));
        }
        input.value = String(option.default);
      } else if (option.type === "int" || option.type === "float") {
        input = element("input", { type: "number", step: option.type === "int" ? 1 : "any" });
        if (option.minimum !== undefined) input.min = option.minimum;
        if (option.maximum !== undefined) input.max = option.maximum;
        input.value = option.default === null ? "" : String(option.default);
      } else {
        input = element("input", { type: "text", value: option.default ?? "" });
      }
      const field = `${behavior}.${key}`;
      input.name = field;
      const error = element("span", { className: "error" });
      error.dataset.error = field;
      error.setAttribute("role", "alert");
      const help = [option.description];
      if (option.minimum !== undefined || option.maximum !== undefined) {
        help.push(`range ${option.minimum ?? "…"} to ${option.maximum ?? "…"}`);
      }
      box.append(
        element(
          "label",
          { className: "option", title: help.join("; ") },
          element("span", { className: "option-name" }, key),
          input,
          element("small", { className: "muted" }, `${option.type}: ${option.description}`),
          error,
        ),
      );
      input.addEventListener("change", () => {
        error.textContent = "";
        if (this.inMix(behavior)) this.applyMix();
      });
      this.fields.set(field, { input, error, behavior, key });
    }
    one(this.root, ".options").append(box);
  }

  inMix(behavior) {
    for (const [entry, percent] of this.shares) {
      if (percent > 0 && entry.split("+").includes(behavior)) return true;
    }
    return false;
  }

  optionValues(behavior) {
    const values = {};
    for (const field of this.fields.values()) {
      if (field.behavior !== behavior) continue;
      // Sent as typed: the API parses text as the command line does, and says what is wrong.
      values[field.key] = field.input.type === "checkbox" ? field.input.checked : field.input.value;
    }
    return values;
  }

  // Changes, and what the API answers.

  async change(route, body, method = "PUT") {
    this.clearErrors();
    try {
      await api(method, `${this.path}${route}`, body);
      return true;
    } catch (error) {
      if (!(error instanceof RefusedError)) throw error;
      this.showError(error.field, error.message);
      return false;
    }
  }

  async reset() {
    // No chaos: the dummy for every event (a running scenario ends with it), and no rules.
    const done = await this.change("behavior", { name: "dummy" });
    if (done && this.last.rules.length) await this.change("rules", undefined, "DELETE");
  }

  clearErrors() {
    for (const shown of this.root.querySelectorAll(".error")) shown.textContent = "";
  }

  showError(field, message) {
    const known = field && this.fields.get(field);
    if (known) {
      known.error.textContent = message;
      known.input.closest("details").open = true;
      return;
    }
    const place = field === "name" ? "[data-error=name]" : ".card-error";
    one(this.root, place).textContent = message;
  }

  // A sample: figures, charts, and the mix and options in force.

  update(proxy, time) {
    this.last = proxy;
    const stats = proxy.stats;
    one(this.root, ".listen").textContent = proxy.proxy;
    one(this.root, ".backend").textContent = proxy.backend;
    one(this.root, ".protocol").textContent = proxy.protocol;
    const badge = one(this.root, ".state");
    badge.textContent = proxy.enabled ? "enabled" : "disabled";
    badge.className = `state ${proxy.enabled ? "on" : "off"}`;
    one(this.root, ".toggle").textContent = proxy.enabled ? "Disable" : "Enable";
    one(this.root, ".spec").textContent = proxy.behavior;
    for (const shown of this.root.querySelectorAll("[data-figure]")) {
      shown.textContent = formatCount(stats[shown.dataset.figure]);
    }
    for (const shown of this.root.querySelectorAll("[data-rate]")) {
      const rate = proxy.rates ? proxy.rates[shown.dataset.rate] : null;
      const isBytes = shown.dataset.rate.startsWith("bytes");
      shown.textContent = rate === null ? "–" : isBytes ? formatBytes(rate) : formatCount(rate);
    }
    if (proxy.rates) pushPoint(this.name, time, state.rateNames.map((key) => proxy.rates[key]));
    for (const [entry, row] of [...this.rows, ["dummy", this.dummyRow]]) {
      row.picks.textContent = formatCount(stats.behaviors[entry] || 0);
    }
    const inForce = JSON.stringify([proxy.mix, proxy.options]);
    if (inForce !== this.inForce) {
      this.inForce = inForce;
      this.sync(proxy);
    }
    this.showRules(proxy.rules);
    this.showScenario(proxy.scenario, stats.steps);
    this.draw();
  }

  sync(proxy) {
    // What is in force now, except where the user is typing or reading an error.
    const editing = this.root.contains(document.activeElement) ? document.activeElement : null;
    for (const entry of this.shares.keys()) this.shares.set(entry, 0);
    for (const [percent, entry] of proxy.mix) {
      if (entry !== "dummy") this.shares.set(entry, percent);
    }
    for (const [entry, percent] of this.shares) {
      const row = this.row(entry);
      if (row.range !== editing) row.range.value = percent;
      if (row.number !== editing) row.number.value = percent;
    }
    this.showRest();
    for (const [behavior, values] of Object.entries(proxy.options)) {
      for (const [key, value] of Object.entries(values)) {
        const field = this.fields.get(`${behavior}.${key}`);
        if (!field || field.input === editing || field.error.textContent) continue;
        if (field.input.type === "checkbox") field.input.checked = Boolean(value);
        else field.input.value = value === null ? "" : String(value);
      }
      const box = this.root.querySelector(`details[data-behavior="${CSS.escape(behavior)}"]`);
      if (box && behavior !== "dummy") box.open = true;
    }
  }

  showRules(rules) {
    // Where the proxy has rules: each, in order, and how many picks it supplied.
    const box = one(this.root, ".rules");
    box.hidden = !rules.length;
    const rows = rules.map((rule) => {
      const row = element(
        "tr",
        {},
        element("th", { scope: "row" }, rule.name),
        element("td", {}, rule.match || "(every request)"),
        element("td", {}, rule.behavior),
        element("td", {}, formatCount(rule.picks)),
      );
      row.dataset.rule = rule.name;
      return row;
    });
    one(box, "tbody").replaceChildren(...rows);
  }

  showScenario(scenario, picks) {
    // Where a scenario runs: its steps, the one in force, what is left of it.
    const box = one(this.root, ".scenario");
    box.hidden = !scenario.scenario;
    if (box.hidden) return;
    const left =
      scenario.left === null ? "" : `, ${formatCount(scenario.left)} ${scenario.unit} left`;
    const pass = scenario.repeat ? `, pass ${scenario.loop}` : "";
    one(box, ".scenario-state").textContent = scenario.done
      ? "done: its last step stays in force"
      : `step ${scenario.step} of ${scenario.steps}${left}${pass}`;
    const texts = scenario.scenario.split("; ").slice(0, scenario.steps);
    const rows = texts.map((text, index) => {
      const number = String(index + 1);
      const row = element(
        "tr",
        { className: index + 1 === scenario.step ? "current" : "" },
        element("th", { scope: "row" }, number),
        element("td", {}, text),
        element("td", {}, formatCount(picks[number] || 0)),
      );
      row.dataset.step = number;
      return row;
    });
    one(box, "tbody").replaceChildren(...rows);
  }

  draw() {
    const points = state.history.get(this.name) || [];
    const at = (name) => state.rateNames.indexOf(name);
    drawChart(
      one(this.root, "[data-chart=bytes]"),
      points,
      at("bytes_to_backend"),
      at("bytes_to_client"),
      formatBytes,
    );
    drawChart(
      one(this.root, "[data-chart=events]"),
      points,
      at("events_to_backend"),
      at("events_to_client"),
      formatCount,
    );
  }
}

// -- the stream ---------------------------------------------------------------------------

function faultItem(fault) {
  // "12:03:04 error on GET /api/x, session 42 · default", or a count of the picks not named.
  const what = [];
  if (fault.session === null) {
    what.push(` ×${fault.count}`);
  } else {
    what.push(" on ");
    if (fault.request !== null) what.push(element("code", {}, fault.request), ", ");
    what.push(`session ${fault.session}`);
  }
  return element(
    "li",
    {},
    element("time", {}, formatTime(fault.time)),
    " ",
    element("strong", {}, fault.behavior),
    ...what,
    " ",
    element("span", { className: "muted" }, `· ${fault.proxy}`),
  );
}

function showFaults(faults) {
  const list = document.getElementById("faults");
  for (const fault of faults) {
    if (fault.id <= state.lastFault) continue;
    state.lastFault = fault.id;
    list.prepend(faultItem(fault));
  }
  while (list.children.length > FEED_LENGTH) list.lastElementChild.remove();
}

function onHistory(event) {
  const data = JSON.parse(event.data);
  state.interval = data.interval;
  state.rateNames = data.rates;
  state.history.clear();
  for (const [time, points] of data.history) {
    for (const [name, rates] of Object.entries(points)) pushPoint(name, time, rates);
  }
  state.lastFault = 0;
  document.getElementById("faults").replaceChildren();
  showFaults(data.faults);
}

function onSample(event) {
  const sample = JSON.parse(event.data);
  const status = document.getElementById("status");
  status.textContent = `live · ${formatTime(sample.time)}`;
  status.className = "status live";
  const others = sample.watchers - 1;
  document.getElementById("watchers").textContent =
    others > 0 ? `${others} other dashboard${others > 1 ? "s" : ""} open` : "";
  const box = document.getElementById("proxies");
  const names = new Set();
  for (const proxy of sample.proxies) {
    names.add(proxy.name);
    let card = state.cards.get(proxy.name);
    if (!card) {
      card = new Card(proxy.name);
      state.cards.set(proxy.name, card);
      box.append(card.root);
    }
    card.update(proxy, sample.time);
  }
  for (const [name, card] of state.cards) {
    if (!names.has(name)) {
      card.root.remove();
      state.cards.delete(name);
    }
  }
  const placeholder = document.getElementById("no-proxy");
  placeholder.hidden = names.size > 0;
  placeholder.textContent = "No proxy in this process yet.";
  showFaults(sample.faults);
}

function connect() {
  state.stream = new EventSource("dashboard/events");
  state.stream.addEventListener("history", onHistory);
  state.stream.addEventListener("sample", onSample);
  state.stream.addEventListener("error", () => {
    const status = document.getElementById("status");
    status.textContent = "reconnecting…";
    status.className = "status lost";
  });
}

function start() {
  const given = new URLSearchParams(location.hash.slice(1)).get("token");
  if (given) {
    // A link may carry the token after '#' (never sent to a server); keep it out of history.
    state.token = given;
    sessionStorage.setItem("vaurien-token", given);
    history.replaceState(null, "", location.pathname + location.search);
  }
  const form = document.getElementById("token-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = document.getElementById("token").value.trim();
    sessionStorage.setItem("vaurien-token", state.token);
    form.hidden = true;
  });
  connect();
  // A page left for another (kept in the back-forward cache) lets its stream go, and takes
  // it again when it comes back.
  window.addEventListener("pagehide", () => state.stream.close());
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) connect();
  });
  window.addEventListener("resize", () => {
    for (const card of state.cards.values()) card.draw();
  });
}

start();
