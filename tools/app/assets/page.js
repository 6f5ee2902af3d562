// The views of `dual-attention viz` and `dual-attention serve`: head view, model view and symbol
// assignment of a DAT language model's attention scores and relations. Plain browser JavaScript,
// no library: the page is self-contained. The data format is described in docs/model_analysis.md.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const HEAD_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#3949ab", "#00897b", "#c0ca33", "#f4511e",
    "#6d4c41", "#5e35b1"];
  const WHAT = [
    ["sa", "Self-attention scores"],
    ["ra", "Relational-attention scores"],
    ["rel", "Relational-attention relations"],
    ["relscaled", "Relations scaled by a relational head's attention"],
  ];
  // The reference app's relation post-processors, applied to scale * relation.
  const PROCESSORS = ["Clip", "Sign", "Sigmoid-Normalize", "Softmax-Normalize"];

  let P = null;       // the payload
  let bytes = null;   // its decoded blob
  const cache = new Map();
  const state = { view: "head", what: "sa", layer: 0, processor: "Clip", scale: 5, relHead: 0,
    heads: new Set(), selected: null };

  // ---- data ----------------------------------------------------------------------------------

  async function decodeBlob(payload) {
    const text = atob(payload.blob);
    let out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    if (payload.encoding === "deflate") {
      const stream = new Blob([out]).stream().pipeThrough(new DecompressionStream("deflate"));
      out = new Uint8Array(await new Response(stream).arrayBuffer());
    }
    return out;
  }

  function nHeads(kind) {
    if (kind === "rel" || kind === "relscaled") return P.heads.rel;
    return P.heads[kind] || 0;
  }

  function hasKind(kind, layer) {
    const k = kind === "relscaled" ? "rel" : kind;
    const list = P.matrices[k];
    return !!(list && list[layer] && list[layer].length) &&
      (kind !== "relscaled" || !!(P.matrices.ra[layer] && P.matrices.ra[layer].length));
  }

  // The stored matrix [n, n] of (kind, layer, head), dequantised: lo + q (hi - lo) / (levels - 1).
  // Causal models store the lower triangle (row i: columns 0..i); the rest is 0.
  function raw(kind, layer, head) {
    const key = kind + "/" + layer + "/" + head;
    if (cache.has(key)) return cache.get(key);
    const [offset, lo, hi] = P.matrices[kind][layer][head];
    const n = P.tokens.length, m = new Float32Array(n * n), step = (hi - lo) / (P.levels[kind] - 1);
    let o = offset;
    for (let i = 0; i < n; i++) {
      const cols = P.triangular ? i + 1 : n;
      for (let j = 0; j < cols; j++) m[i * n + j] = lo + bytes[o++] * step;
    }
    cache.set(key, m);
    return m;
  }

  function processed(layer, relation) {
    const n = P.tokens.length, r = raw("rel", layer, relation), out = new Float32Array(n * n);
    const s = state.scale;
    for (let i = 0; i < n; i++) {
      const cols = P.triangular ? i + 1 : n;
      if (state.processor === "Softmax-Normalize") {
        let max = -Infinity;
        for (let j = 0; j < cols; j++) max = Math.max(max, s * r[i * n + j]);
        let sum = 0;
        for (let j = 0; j < cols; j++) sum += (out[i * n + j] = Math.exp(s * r[i * n + j] - max));
        for (let j = 0; j < cols; j++) out[i * n + j] /= sum;
        continue;
      }
      for (let j = 0; j < cols; j++) {
        const v = s * r[i * n + j];
        out[i * n + j] = state.processor === "Clip" ? Math.min(Math.max(v, 0), 1)
          : state.processor === "Sign" ? (v > 0 ? 1 : 0) : 1 / (1 + Math.exp(-v));
      }
    }
    return out;
  }

  // What the views draw for head `head` of `layer`: values in [0, 1], [n, n].
  function shown(layer, head) {
    if (state.what === "sa" || state.what === "ra") return raw(state.what, layer, head);
    const rel = processed(layer, head);
    if (state.what === "rel") return rel;
    const attn = raw("ra", layer, state.relHead);
    for (let i = 0; i < rel.length; i++) rel[i] *= attn[i];
    return rel;
  }

  function headLabel(head) {
    return (state.what === "rel" || state.what === "relscaled") ? "relation " + head : "head " + head;
  }

  function tokenText(t) {
    return t.replace(/\n/g, "\u21b5").replace(/\t/g, "\u2192").replace(/ /g, "\u00b7");
  }

  // ---- tooltip -------------------------------------------------------------------------------

  function showTip(event, text) {
    const tip = $("tooltip");
    tip.textContent = text;
    tip.hidden = false;
    const x = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
    const y = Math.min(event.clientY + 14, window.innerHeight - tip.offsetHeight - 8);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }
  function hideTip() { $("tooltip").hidden = true; }

  function fmt(v) { return Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(3); }

  // ---- controls ------------------------------------------------------------------------------

  function fillSelect(select, items, value) {
    select.innerHTML = "";
    for (const [v, label] of items) {
      const o = document.createElement("option");
      o.value = v;
      o.textContent = label;
      select.appendChild(o);
    }
    select.value = String(value);
  }

  function setupControls() {
    const kinds = WHAT.filter(([k]) => {
      for (let l = 0; l < P.n_layers; l++) if (hasKind(k, l)) return true;
      return false;
    });
    if (!kinds.find(([k]) => k === state.what) && kinds.length) state.what = kinds[0][0];
    fillSelect($("what"), kinds, state.what);
    fillSelect($("layer"), [...Array(P.n_layers).keys()].map((l) => [l, "layer " + l]),
      Math.min(state.layer, P.n_layers - 1));
    state.layer = Number($("layer").value);
    fillSelect($("rel-head"), [...Array(P.heads.ra || 0).keys()].map((h) => [h, "head " + h]),
      Math.min(state.relHead, Math.max(0, (P.heads.ra || 1) - 1)));
    const procs = $("processors");
    procs.innerHTML = "";
    for (const name of PROCESSORS) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "processor";
      input.value = name;
      input.checked = name === state.processor;
      input.addEventListener("change", () => { state.processor = name; render(); });
      label.append(input, " " + name);
      procs.appendChild(label);
    }
    resetHeads();
  }

  function resetHeads() {
    state.heads = new Set([...Array(nHeads(state.what)).keys()]);
  }

  function bindControls() {
    $("view").addEventListener("change", (e) => { state.view = e.target.value; render(); });
    $("what").addEventListener("change", (e) => {
      state.what = e.target.value;
      resetHeads();
      state.selected = null;
      render();
    });
    $("layer").addEventListener("change", (e) => { state.layer = Number(e.target.value); render(); });
    $("rel-head").addEventListener("change", (e) => { state.relHead = Number(e.target.value); render(); });
    $("scale").addEventListener("input", (e) => {
      state.scale = Number(e.target.value);
      $("scale-out").textContent = state.scale.toFixed(1);
      render();
    });
  }

  // ---- views ---------------------------------------------------------------------------------

  function render() {
    const rel = state.what === "rel" || state.what === "relscaled";
    const symbols = state.view === "symbols";
    $("what-box").hidden = symbols;
    $("rel-box").hidden = symbols || !rel;
    $("rel-head-box").hidden = symbols || state.what !== "relscaled";
    $("layer-box").hidden = state.view === "model";
    $("heads").innerHTML = "";
    $("detail").innerHTML = "";
    const area = $("view-area");
    area.innerHTML = "";
    if (symbols) return renderSymbols(area);
    if (!$("what").options.length) {
      area.innerHTML = '<p class="note">This model has no attention scores to show.</p>';
      return;
    }
    if (state.view === "head") renderHeadView(area);
    else renderModelView(area);
  }

  function renderHeadChips() {
    const box = $("heads");
    for (let h = 0; h < nHeads(state.what); h++) {
      const chip = document.createElement("span");
      chip.className = "head-chip" + (state.heads.has(h) ? "" : " off");
      chip.textContent = headLabel(h);
      chip.style.borderColor = HEAD_COLORS[h % HEAD_COLORS.length];
      chip.dataset.head = h;
      chip.title = "click: show or hide; double-click: show only this one";
      chip.addEventListener("click", () => {
        if (state.heads.has(h)) state.heads.delete(h); else state.heads.add(h);
        render();
      });
      chip.addEventListener("dblclick", () => { state.heads = new Set([h]); render(); });
      box.appendChild(chip);
    }
  }

  // One layer: the tokens twice, lines from each query token (left) to the tokens it attends to
  // (right), one colour per head, opacity = value. Hovering a token keeps only its lines and
  // lists its values.
  function renderHeadView(area) {
    const layer = state.layer;
    if (!hasKind(state.what, layer)) {
      area.innerHTML = '<p class="note">Layer ' + layer + " has none of these scores.</p>";
      return;
    }
    renderHeadChips();
    const n = P.tokens.length, row = 20, pad = 12, labelW = 150, gap = 240;
    const width = labelW * 2 + gap, height = n * row + 2 * pad;
    const canvas = document.createElement("canvas");
    canvas.className = "headview";
    canvas.id = "head-view-canvas";
    const dpr = window.devicePixelRatio || 1;
    canvas.width = width * dpr;
    canvas.height = height * dpr;
    canvas.style.width = width + "px";
    canvas.style.height = height + "px";
    area.appendChild(canvas);
    const ctx = canvas.getContext("2d");
    ctx.scale(dpr, dpr);
    const heads = [...state.heads].sort((a, b) => a - b);
    const mats = heads.map((h) => shown(layer, h));
    const y = (i) => pad + i * row + row / 2;
    const x0 = labelW + 6, x1 = labelW + gap - 6;

    function draw(focus) {
      ctx.clearRect(0, 0, width, height);
      ctx.font = "13px ui-monospace, monospace";
      ctx.textBaseline = "middle";
      for (let i = 0; i < n; i++) {
        const t = tokenText(P.tokens[i]);
        const prompt = i < P.n_prompt;
        const hot = focus && ((focus.side === 0 && focus.i === i) || (focus.side === 1 && focus.i === i));
        ctx.fillStyle = hot ? "#000" : prompt ? "#1d2330" : "#2f6fde";
        ctx.textAlign = "right";
        ctx.fillText(t, labelW, y(i));
        ctx.textAlign = "left";
        ctx.fillText(t, labelW + gap, y(i));
      }
      ctx.lineWidth = focus ? 2 : 1.5;
      mats.forEach((m, k) => {
        ctx.strokeStyle = HEAD_COLORS[heads[k] % HEAD_COLORS.length];
        for (let i = 0; i < n; i++) {
          if (focus && focus.side === 0 && focus.i !== i) continue;
          for (let j = 0; j < n; j++) {
            if (focus && focus.side === 1 && focus.i !== j) continue;
            const v = m[i * n + j];
            if (!(v > 0.01)) continue;
            ctx.globalAlpha = Math.min(1, v) * (heads.length > 1 ? 0.8 : 1);
            ctx.beginPath();
            ctx.moveTo(x0, y(i));
            ctx.lineTo(x1, y(j));
            ctx.stroke();
          }
        }
      });
      ctx.globalAlpha = 1;
    }
    draw(null);

    canvas.addEventListener("mousemove", (e) => {
      const r = canvas.getBoundingClientRect();
      const px = e.clientX - r.left, py = e.clientY - r.top;
      const i = Math.floor((py - pad) / row);
      const side = px < labelW + 3 ? 0 : px > labelW + gap - 3 ? 1 : -1;
      if (i < 0 || i >= n || side < 0) { draw(null); hideTip(); return; }
      draw({ side, i });
      const lines = [(side === 0 ? "from " : "to ") + i + " " + JSON.stringify(P.tokens[i])];
      mats.forEach((m, k) => {
        const vals = [];
        for (let j = 0; j < n; j++) {
          const v = side === 0 ? m[i * n + j] : m[j * n + i];
          if (v > 0) vals.push([v, j]);
        }
        vals.sort((a, b) => b[0] - a[0]);
        lines.push(headLabel(heads[k]) + ": " + vals.slice(0, 5).map(([v, j]) =>
          j + " " + JSON.stringify(P.tokens[j]) + " " + fmt(v)).join(", "));
      });
      showTip(e, lines.join("\n"));
    });
    canvas.addEventListener("mouseleave", () => { draw(null); hideTip(); });
  }

  // A heatmap of m ([n, n], values in [0, 1]) on a canvas `size` pixels wide; hovering shows the
  // value under the pointer.
  function heatmap(m, size, label, color) {
    const n = P.tokens.length;
    const off = document.createElement("canvas");
    off.width = n;
    off.height = n;
    const octx = off.getContext("2d"), img = octx.createImageData(n, n);
    const [cr, cg, cb] = [1, 3, 5].map((k) => parseInt(color.slice(k, k + 2), 16));
    for (let p = 0; p < n * n; p++) {
      const v = Math.sqrt(Math.min(Math.max(m[p], 0), 1));  // sqrt: small weights stay visible
      img.data[4 * p] = 255 - v * (255 - cr);
      img.data[4 * p + 1] = 255 - v * (255 - cg);
      img.data[4 * p + 2] = 255 - v * (255 - cb);
      img.data[4 * p + 3] = 255;
    }
    octx.putImageData(img, 0, 0);
    const canvas = document.createElement("canvas");
    canvas.width = size;
    canvas.height = size;
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, 0, 0, size, size);
    canvas.addEventListener("mousemove", (e) => {
      const r = canvas.getBoundingClientRect();
      const i = Math.floor((e.clientY - r.top) / r.height * n);
      const j = Math.floor((e.clientX - r.left) / r.width * n);
      if (i < 0 || j < 0 || i >= n || j >= n) return hideTip();
      showTip(e, label + "\nfrom " + i + " " + JSON.stringify(P.tokens[i]) + "\nto   " + j + " " +
        JSON.stringify(P.tokens[j]) + "\nvalue " + fmt(m[i * n + j]));
    });
    canvas.addEventListener("mouseleave", hideTip);
    return canvas;
  }

  // Every layer and head at once, as heatmaps (rows: query tokens, columns: attended tokens).
  // Clicking one shows it large below the grid.
  function renderModelView(area) {
    const H = nHeads(state.what), L = P.n_layers;
    const size = Math.max(48, Math.min(110, Math.floor(1100 / Math.max(H, 1)) - 8));
    const grid = document.createElement("div");
    grid.className = "grid";
    grid.id = "model-grid";
    grid.style.gridTemplateColumns = "60px repeat(" + H + ", " + size + "px)";
    grid.appendChild(document.createElement("span"));
    for (let h = 0; h < H; h++) {
      const s = document.createElement("span");
      s.className = "axis";
      s.textContent = headLabel(h);
      grid.appendChild(s);
    }
    for (let l = 0; l < L; l++) {
      const s = document.createElement("span");
      s.className = "axis";
      s.textContent = "layer " + l;
      grid.appendChild(s);
      for (let h = 0; h < H; h++) {
        if (!hasKind(state.what, l)) { grid.appendChild(document.createElement("span")); continue; }
        const m = shown(l, h);
        const label = "layer " + l + ", " + headLabel(h);
        const c = heatmap(m, size, label, HEAD_COLORS[h % HEAD_COLORS.length]);
        c.dataset.layer = l;
        c.dataset.head = h;
        c.addEventListener("click", () => {
          grid.querySelectorAll("canvas.selected").forEach((x) => x.classList.remove("selected"));
          c.classList.add("selected");
          state.selected = [l, h];
          renderDetail(m, label, HEAD_COLORS[h % HEAD_COLORS.length]);
        });
        grid.appendChild(c);
      }
    }
    area.appendChild(grid);
  }

  function renderDetail(m, label, color) {
    const box = $("detail");
    box.innerHTML = "";
    const title = document.createElement("h3");
    title.textContent = label;
    box.appendChild(title);
    const n = P.tokens.length;
    box.appendChild(heatmap(m, Math.min(640, Math.max(256, n * 8)), label, color));
  }

  // Which symbols each token retrieves: for the chosen layer, per head, the symbols with the
  // largest weights (the cell shows the first, its shade its weight; hover lists them all).
  function renderSymbols(area) {
    const S = P.symbols;
    if (!S || !S.layers.some((o) => o !== null)) {
      area.innerHTML = '<p class="note">This model\'s symbol retriever chooses symbols by ' +
        "position, not by attention: there are no symbol-assignment weights.</p>";
      return;
    }
    const layer = state.layer, offset = S.layers[layer];
    if (offset === null) {
      area.innerHTML = '<p class="note">Layer ' + layer + " has no symbol attention.</p>";
      return;
    }
    const n = P.tokens.length, k = S.k;
    const table = document.createElement("table");
    table.className = "symbols";
    table.id = "symbol-table";
    const head = table.insertRow();
    head.innerHTML = "<th>#</th><th>token</th>" +
      [...Array(S.n_heads).keys()].map((h) => "<th>head " + h + "</th>").join("");
    for (let i = 0; i < n; i++) {
      const tr = table.insertRow();
      tr.insertCell().textContent = i;
      const tok = tr.insertCell();
      tok.className = "tok";
      tok.textContent = tokenText(P.tokens[i]);
      for (let h = 0; h < S.n_heads; h++) {
        const picks = [];
        for (let r = 0; r < k; r++) {
          const o = offset + ((h * n + i) * k + r) * 3;
          picks.push([bytes[o] | (bytes[o + 1] << 8), bytes[o + 2] / 255]);
        }
        const td = tr.insertCell();
        td.className = "sym";
        td.textContent = "#" + picks[0][0];
        const c = HEAD_COLORS[h % HEAD_COLORS.length];
        td.style.background = c + Math.round(picks[0][1] * 200).toString(16).padStart(2, "0");
        const text = "layer " + layer + ", head " + h + ", token " + i + " " +
          JSON.stringify(P.tokens[i]) + "\n" + picks.map(([s, w]) => "symbol " + s + ": " +
          w.toFixed(3)).join("\n");
        td.addEventListener("mousemove", (e) => showTip(e, text));
        td.addEventListener("mouseleave", hideTip);
      }
    }
    const note = document.createElement("p");
    note.className = "note";
    note.textContent = "Top " + k + " of " + S.n_symbols + " symbols per head; the cell shows the " +
      "symbol with the largest weight, shaded by it.";
    area.append(note, table);
  }

  // ---- entry points --------------------------------------------------------------------------

  async function show(payload) {
    P = payload;
    bytes = await decodeBlob(payload);
    cache.clear();
    $("viz").hidden = false;
    $("model-info").textContent = P.model + " (" + P.model_class + ") \u2014 " + P.n_layers +
      " layers, " + P.tokens.length + " tokens";
    setupControls();
    render();
    document.body.dataset.ready = "1";
  }
  window.datviz = { show, state, render };

  bindControls();
  if (DATVIZ_PAYLOAD) show(DATVIZ_PAYLOAD).catch((e) => {
    document.body.insertAdjacentHTML("beforeend", '<p class="note">Cannot show the data: ' +
      String(e) + "</p>");
  });
  if (DATVIZ_APP) startApp(DATVIZ_APP);

  // ---- the app of `dual-attention serve` -----------------------------------------------------

  function startApp(config) {
    $("app").hidden = false;
    $("model-info").textContent = config.model;
    const status = (text, error) => {
      $("status").textContent = text;
      $("status").classList.toggle("error", !!error);
    };
    let generated = "";

    function request() {
      const body = {
        model: config.model, prompt: $("prompt").value, stream: true,
        max_tokens: Number($("max-tokens").value), temperature: Number($("temperature").value),
        top_p: Number($("top-p").value), seed: Number($("seed").value),
      };
      const k = Number($("top-k").value);
      if (k > 0) body.top_k = k;
      const stop = $("stop").value.replace(/\\n/g, "\n").replace(/\\t/g, "\t");
      if (stop) body.stop = stop;
      return body;
    }

    async function errorText(response) {
      try { return (await response.json()).error.message; } catch (e) { return response.statusText; }
    }

    $("generate-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      $("generate").disabled = $("visualize").disabled = true;
      const out = $("output");
      out.innerHTML = "";
      const prompt = document.createElement("span");
      prompt.className = "prompt-text";
      prompt.textContent = $("prompt").value;
      const text = document.createElement("span");
      text.id = "generated-text";
      out.append(prompt, text);
      generated = "";
      status("generating\u2026");
      try {
        const response = await fetch("/v1/completions", { method: "POST",
          headers: { "Content-Type": "application/json" }, body: JSON.stringify(request()) });
        if (!response.ok) throw new Error(await errorText(response));
        const reader = response.body.getReader(), decoder = new TextDecoder();
        let buffer = "", done = false, tokens = 0;
        while (!done) {
          const chunk = await reader.read();
          if (chunk.done) break;
          buffer += decoder.decode(chunk.value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const event = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            if (!event.startsWith("data: ")) continue;
            const data = event.slice(6);
            if (data === "[DONE]") { done = true; break; }
            const json = JSON.parse(data);
            if (json.error) throw new Error(json.error.message);
            generated += json.choices[0].text;
            text.textContent = generated;
            // The last chunk carries the usage; the others count the chunks (tokens) so far.
            tokens = json.usage ? json.usage.completion_tokens : tokens + 1;
            status("generating\u2026 " + tokens + " tokens");
          }
        }
        status("done: " + tokens + " tokens");
      } catch (err) {
        status(String(err.message || err), true);
      } finally {
        $("generate").disabled = $("visualize").disabled = false;
      }
    });

    $("visualize").addEventListener("click", async () => {
      $("generate").disabled = $("visualize").disabled = true;
      status("running the forward pass\u2026");
      try {
        const response = await fetch("/v1/visualize", { method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ model: config.model, prompt: $("prompt").value + generated }) });
        if (!response.ok) throw new Error(await errorText(response));
        await show(await response.json());
        status("visualization ready");
      } catch (err) {
        status(String(err.message || err), true);
      } finally {
        $("generate").disabled = $("visualize").disabled = false;
      }
    });
  }
})();
