/* The attention explorer's script, written for this page (no framework, nothing fetched).
 *
 * It reads the JSON block the page carries (mmt_numpy/explorer/page.py writes it) and draws
 * three views of one example's attention:
 *   head view        tokens in two columns, a line per (query, key) whose opacity is the weight,
 *                    one colour per head, all heads overlaid or one at a time;
 *   cross-modal view a word's attention over the image patches laid on the image, or, for a
 *                    patch, how much each word attends to it; optionally the attention rollout;
 *   model view       every layer x head as a small heat map; a click enlarges one.
 * Weights arrive as one byte each (round(255 w)), row-major over (layer, head, query, key).
 */
(function () {
  "use strict";

  // ------------------------------------------------------------------ errors
  var errors = [];
  window.__explorerErrors = errors;
  function report(message) {
    errors.push(String(message));
    var box = document.getElementById("errors");
    if (box) box.textContent = errors.join("\n");
  }
  window.addEventListener("error", function (event) { report(event.message); });

  var DATA = JSON.parse(document.querySelector('script[type="application/json"]').textContent);
  var NL = DATA.model.layers, NH = DATA.model.heads;
  var ROW = 16; // pixels per token in the head view

  // ------------------------------------------------------------------ colours
  // Anchors of matplotlib's colour maps at 0, 1/8, ..., 1, interpolated linearly.
  var MAPS = {
    viridis: ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"],
    inferno: ["#000004", "#210c4a", "#57106e", "#8a226a", "#bc3754", "#e45a31", "#f98e09", "#f9cb35", "#fcffa4"]
  };
  var HEAD_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf"];

  function hexToRgb(hex) {
    var n = parseInt(hex.slice(1), 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }
  var TABLES = {};
  Object.keys(MAPS).forEach(function (name) {
    var anchors = MAPS[name].map(hexToRgb), table = new Uint8ClampedArray(256 * 3);
    for (var i = 0; i < 256; i++) {
      var x = (i / 255) * (anchors.length - 1), k = Math.min(Math.floor(x), anchors.length - 2), f = x - k;
      for (var c = 0; c < 3; c++) table[3 * i + c] = Math.round(anchors[k][c] * (1 - f) + anchors[k + 1][c] * f);
    }
    TABLES[name] = table;
  });
  function colour(name, value) { // value in [0, 1] -> [r, g, b]
    var t = TABLES[name], i = Math.max(0, Math.min(255, Math.round(value * 255)));
    return [t[3 * i], t[3 * i + 1], t[3 * i + 2]];
  }
  function css(rgb, alpha) { return "rgba(" + rgb[0] + "," + rgb[1] + "," + rgb[2] + "," + alpha + ")"; }
  function headColour(h) { return HEAD_COLOURS[h % HEAD_COLOURS.length]; }

  // ------------------------------------------------------------------ weights
  var cache = {};
  function weightsOf(e) { // Float32Array over (layer, head, query, key)
    if (!cache["w" + e]) {
      var ex = DATA.examples[e], L = ex.tokens.length, bytes = atob(ex.weights);
      if (bytes.length !== NL * NH * L * L) {
        throw new Error("example " + e + ": expected " + NL * NH * L * L + " weights, got " + bytes.length);
      }
      var w = new Float32Array(bytes.length);
      for (var i = 0; i < bytes.length; i++) w[i] = bytes.charCodeAt(i) / DATA.levels;
      cache["w" + e] = w;
    }
    return cache["w" + e];
  }
  function size(e) { return DATA.examples[e].tokens.length; }
  function matrix(e, layer, head) { // (L, L) of one head
    var L = size(e), n = L * L;
    return weightsOf(e).subarray((layer * NH + head) * n, (layer * NH + head + 1) * n);
  }
  function headMean(e, layer) { // (L, L) averaged over the heads
    var key = "m" + e + "," + layer;
    if (!cache[key]) {
      var L = size(e), mean = new Float32Array(L * L);
      for (var h = 0; h < NH; h++) {
        var m = matrix(e, layer, h);
        for (var i = 0; i < L * L; i++) mean[i] += m[i] / NH;
      }
      cache[key] = mean;
    }
    return cache[key];
  }
  // Attention rollout (Abnar & Zuidema 2020), as mmt_numpy.viz.attention_rollout computes it:
  // A_l = row_normalise(mean_h W_l + I), rollout = A_n ... A_1.
  function rollout(e) {
    var key = "r" + e;
    if (!cache[key]) {
      var L = size(e), R = new Float32Array(L * L), i, j, k;
      for (i = 0; i < L; i++) R[i * L + i] = 1;
      for (var layer = 0; layer < NL; layer++) {
        var A = Float32Array.from(headMean(e, layer)), next = new Float32Array(L * L);
        for (i = 0; i < L; i++) {
          A[i * L + i] += 1;
          var total = 0;
          for (j = 0; j < L; j++) total += A[i * L + j];
          for (j = 0; j < L; j++) A[i * L + j] /= total;
        }
        for (i = 0; i < L; i++) {
          for (k = 0; k < L; k++) {
            var a = A[i * L + k];
            if (a === 0) continue;
            for (j = 0; j < L; j++) next[i * L + j] += a * R[k * L + j];
          }
        }
        R = next;
      }
      cache[key] = R;
    }
    return cache[key];
  }
  window.__explorerRollout = function (e) { return Array.from(rollout(e)); }; // for tests

  // ------------------------------------------------------------------ state
  var state = { example: 0, layer: 0, head: 0, rollout: false, query: null, key: null, word: null,
    patch: null, detail: null };
  var built = -1; // the example whose token elements exist

  function $(id) { return document.getElementById(id); }
  function element(tag, className, text) {
    var el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;
    return el;
  }
  function format(value) { return value >= 0.995 ? value.toFixed(2) : value.toFixed(3).replace(/^0/, ""); }

  // The matrix the cross-modal view reads: a head, the heads' mean, or the rollout.
  function selected(e) {
    if (state.rollout) return rollout(e);
    return state.head < 0 ? headMean(e, state.layer) : matrix(e, state.layer, state.head);
  }
  function selectionName() {
    if (state.rollout) return "rollout of layers 0-" + (NL - 1) + ", heads averaged";
    return "layer " + state.layer + ", " + (state.head < 0 ? "heads averaged" : "head " + state.head);
  }

  // ------------------------------------------------------------------ controls
  function buildControls() {
    $("source").textContent = DATA.source + " \u2014 " + NL + " layers, " + NH + " heads, hidden width " +
      DATA.model.hidden_dim + ", " + DATA.examples.length + " examples";
    var select = $("example");
    DATA.examples.forEach(function (ex, e) {
      var option = element("option", "", (e + 1) + ". " + ex.question);
      option.value = String(e);
      select.appendChild(option);
    });
    select.addEventListener("change", function () { setExample(Number(select.value)); });
    for (var l = 0; l < NL; l++) {
      var b = element("button", "layer", String(l));
      b.type = "button";
      b.dataset.layer = String(l);
      b.title = "layer " + l + " (keys \u2191 \u2193)";
      b.addEventListener("click", setLayer.bind(null, l));
      $("layers").appendChild(b);
    }
    for (var h = 0; h < NH; h++) {
      var hb = element("button", "head", String(h));
      hb.type = "button";
      hb.dataset.head = String(h);
      hb.style.setProperty("--head-colour", headColour(h));
      hb.title = "head " + h + " alone (key " + (h + 1) + ")";
      hb.addEventListener("click", setHead.bind(null, h));
      $("heads").appendChild(hb);
    }
    var all = element("button", "all-heads", "all");
    all.type = "button";
    all.title = "all heads overlaid, each in its colour (key a)";
    all.addEventListener("click", setHead.bind(null, -1));
    $("heads").appendChild(all);
    $("rollout").addEventListener("change", function () { setRollout($("rollout").checked); });
    $("detail-close").addEventListener("click", closeDetail);
  }

  function setExample(e) {
    state.example = (e + DATA.examples.length) % DATA.examples.length;
    state.query = state.key = state.word = state.patch = null;
    render();
  }
  function setLayer(l) { state.layer = l; render(); }
  function setHead(h) { state.head = h; render(); }
  function setRollout(on) { state.rollout = on; render(); }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    var target = event.target;
    if (target.tagName === "SELECT" || (target.tagName === "INPUT" && target.type !== "checkbox")) return;
    var key = event.key;
    if (key === "ArrowRight") setHead(state.head < 0 ? 0 : (state.head + 1) % NH);
    else if (key === "ArrowLeft") setHead(state.head < 0 ? NH - 1 : (state.head - 1 + NH) % NH);
    else if (key === "ArrowUp") setLayer((state.layer - 1 + NL) % NL);
    else if (key === "ArrowDown") setLayer((state.layer + 1) % NL);
    else if (key === "a" || key === "A" || key === "0") setHead(-1);
    else if (key === "r" || key === "R") setRollout(!state.rollout);
    else if (key === "n" || key === "PageDown") setExample(state.example + 1);
    else if (key === "p" || key === "PageUp") setExample(state.example - 1);
    else if (key === "Escape") closeDetail();
    else if (/^[1-9]$/.test(key) && Number(key) <= NH) setHead(Number(key) - 1);
    else return;
    event.preventDefault();
  });

  // ------------------------------------------------------------------ tokens of an example
  function hover(el, enter, leave) {
    el.addEventListener("mouseenter", enter);
    el.addEventListener("focus", enter);
    el.addEventListener("mouseleave", leave);
    el.addEventListener("blur", leave);
  }
  function tokenClass(ex, i) {
    var kind = i < ex.num_text ? "text" : "image";
    return "token " + kind + (ex.keep[i] ? "" : " masked");
  }
  function buildExample() {
    var e = state.example, ex = DATA.examples[e], L = ex.tokens.length, Lt = ex.num_text;
    var queries = $("queries"), keys = $("keys"), words = $("words"), patches = $("patches");
    queries.textContent = keys.textContent = words.textContent = patches.textContent = "";
    ex.tokens.forEach(function (label, i) {
      [queries, keys].forEach(function (column, side) {
        var t = element("div", tokenClass(ex, i));
        t.appendChild(element("span", "label", label));
        t.appendChild(element("span", "value"));
        t.dataset.index = String(i);
        t.tabIndex = 0;
        t.title = (side === 0 ? "query " : "key ") + i + ": " + label +
          (ex.keep[i] ? "" : side === 0 ? " (padding: its output is not used)" : " (padding: masked, no query may attend)");
        hover(t, function () { if (side === 0) state.query = i; else state.key = i; renderHeadView(); },
          function () { state.query = state.key = null; renderHeadView(); });
        column.appendChild(t);
      });
    });
    for (var t = 0; t < Lt; t++) {
      var w = element("button", "word" + (ex.keep[t] ? "" : " masked"));
      w.type = "button";
      w.appendChild(element("span", "label", ex.tokens[t]));
      w.appendChild(element("span", "value"));
      w.dataset.index = String(t);
      w.setAttribute("role", "listitem");
      if (!ex.keep[t]) { w.disabled = true; w.title = "padding: masked as a key, its output is not used"; }
      hover(w, (function (i) { return function () { state.word = i; state.patch = null; renderCross(); }; })(t),
        function () { state.word = null; renderCross(); });
      words.appendChild(w);
    }
    var gh = ex.grid[0], gw = ex.grid[1];
    patches.style.gridTemplateColumns = "repeat(" + gw + ", 1fr)";
    patches.style.gridTemplateRows = "repeat(" + gh + ", 1fr)";
    for (var p = 0; p < gh * gw; p++) {
      var cell = element("div", "patch");
      cell.tabIndex = 0;
      cell.dataset.index = String(p);
      cell.title = ex.tokens[Lt + p] + " (token " + (Lt + p) + ")";
      hover(cell, (function (i) { return function () { state.patch = i; state.word = null; renderCross(); }; })(p),
        function () { state.patch = null; renderCross(); });
      patches.appendChild(cell);
    }
    $("image").src = ex.image;
    buildGrid();
    built = e;
  }

  // ------------------------------------------------------------------ head view
  function renderHeadView() {
    var e = state.example, ex = DATA.examples[e], L = ex.tokens.length;
    var canvas = $("lines"), ratio = window.devicePixelRatio || 1, width = 160, height = L * ROW;
    canvas.style.width = width + "px";
    canvas.style.height = height + "px";
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.lineWidth = 1.3;
    var heads = [];
    for (var h = 0; h < NH; h++) if (state.head < 0 || state.head === h) heads.push(h);
    var BUCKETS = 50; // lines are batched by opacity, one path per (head, opacity step)
    heads.forEach(function (head) {
      var m = matrix(e, state.layer, head), rgb = hexToRgb(headColour(head)), paths = [];
      for (var i = 0; i < L; i++) {
        if (state.query !== null && state.query !== i) continue;
        for (var j = 0; j < L; j++) {
          if (state.key !== null && state.key !== j) continue;
          var k = Math.round(m[i * L + j] * BUCKETS);
          if (k === 0) continue;
          var path = paths[k] || (paths[k] = new Path2D());
          path.moveTo(0, (i + 0.5) * ROW);
          path.lineTo(width, (j + 0.5) * ROW);
        }
      }
      paths.forEach(function (path, k) {
        if (!path) return;
        ctx.strokeStyle = css(rgb, k / BUCKETS);
        ctx.stroke(path);
      });
    });
    // The weights of the focused token, written beside the other column (one head, or the mean).
    var shown = state.head < 0 ? headMean(e, state.layer) : matrix(e, state.layer, state.head);
    var left = $("queries").children, right = $("keys").children;
    for (var t = 0; t < L; t++) {
      left[t].classList.toggle("active", state.query === t);
      right[t].classList.toggle("active", state.key === t);
      right[t].lastChild.textContent = state.query !== null ? format(shown[state.query * L + t]) : "";
      left[t].lastChild.textContent = state.key !== null ? format(shown[t * L + state.key]) : "";
    }
  }

  // ------------------------------------------------------------------ cross-modal view
  function renderCross() {
    var e = state.example, ex = DATA.examples[e], L = ex.tokens.length, Lt = ex.num_text;
    var P = ex.grid[0] * ex.grid[1], m = selected(e), words = $("words").children, cells = $("patches").children;
    var t, p, top = 0, values = [];
    if (state.patch !== null) {
      // Column of one patch: each word's weight on it, as a share of that word's image attention.
      for (t = 0; t < Lt; t++) {
        var onImage = 0;
        for (p = 0; p < P; p++) onImage += m[t * L + Lt + p];
        values.push(ex.keep[t] && onImage > 0 ? m[t * L + Lt + state.patch] / onImage : 0);
      }
      top = Math.max.apply(null, values) || 1;
      for (t = 0; t < Lt; t++) {
        words[t].style.background = ex.keep[t] ? css(colour("inferno", values[t] / top), 0.75) : "";
        words[t].style.color = values[t] / top > 0.55 ? "#000" : ex.keep[t] ? "#fff" : "";
        words[t].lastChild.textContent = ex.keep[t] ? format(values[t]) : "";
        words[t].classList.remove("active");
      }
      for (p = 0; p < P; p++) {
        cells[p].style.background = "";
        cells[p].textContent = "";
        cells[p].classList.toggle("active", p === state.patch);
      }
      $("cross-caption").textContent = "Which words attend to " + ex.tokens[Lt + state.patch] +
        " (" + selectionName() + "): each word's weight on it, as a share of its attention on the image.";
    } else {
      var word = state.word === null ? 0 : state.word, total = 0;
      for (p = 0; p < P; p++) total += m[word * L + Lt + p];
      for (p = 0; p < P; p++) values.push(total > 0 ? m[word * L + Lt + p] / total : 0);
      top = Math.max.apply(null, values) || 1;
      for (p = 0; p < P; p++) {
        cells[p].style.background = css(colour("inferno", values[p] / top), 0.55);
        cells[p].style.color = values[p] / top > 0.6 ? "#000" : ""; // dark text on the bright end
        cells[p].style.textShadow = values[p] / top > 0.6 ? "none" : "";
        cells[p].textContent = P <= 64 ? format(values[p]) : "";
        cells[p].classList.remove("active");
      }
      for (t = 0; t < Lt; t++) {
        words[t].style.background = "";
        words[t].style.color = "";
        words[t].lastChild.textContent = "";
        words[t].classList.toggle("active", t === word);
      }
      $("cross-caption").textContent = "\u201c" + ex.tokens[word] + "\u201d \u2192 image (" + selectionName() +
        "): " + Math.round(100 * total) + "% of its attention is on the image, shown renormalised over the patches" +
        (state.word === null ? "; [CLS] is where the answer is read." : ".");
    }
    drawScale($("cross-scale"), "inferno", top, "share of the image attention", false);
  }

  // ------------------------------------------------------------------ model view
  function paint(canvas, e, layer, head) { // one (L, L) map at one pixel per weight
    var ex = DATA.examples[e], L = ex.tokens.length, m = matrix(e, layer, head);
    canvas.width = L;
    canvas.height = L;
    var ctx = canvas.getContext("2d"), image = ctx.createImageData(L, L);
    for (var i = 0; i < L; i++) {
      for (var j = 0; j < L; j++) {
        var o = 4 * (i * L + j), rgb;
        if (!ex.keep[j]) rgb = (i + j) % 2 ? [200, 200, 200] : [236, 236, 236]; // masked key: grey hatch
        else rgb = colour("viridis", m[i * L + j]);
        image.data[o] = rgb[0];
        image.data[o + 1] = rgb[1];
        image.data[o + 2] = rgb[2];
        image.data[o + 3] = 255;
      }
    }
    ctx.putImageData(image, 0, 0);
  }
  function buildGrid() {
    var grid = $("grid"), e = state.example;
    grid.textContent = "";
    grid.style.gridTemplateColumns = "auto repeat(" + NH + ", 86px)";
    grid.appendChild(element("span", "label", ""));
    for (var h = 0; h < NH; h++) {
      var title = element("span", "label", "head " + h);
      title.style.color = headColour(h);
      grid.appendChild(title);
    }
    for (var l = 0; l < NL; l++) {
      grid.appendChild(element("span", "label", "layer " + l));
      for (h = 0; h < NH; h++) {
        var canvas = element("canvas", "thumb");
        canvas.dataset.layer = String(l);
        canvas.dataset.head = String(h);
        canvas.tabIndex = 0;
        canvas.setAttribute("role", "button");
        canvas.setAttribute("aria-label", "layer " + l + ", head " + h + ": enlarge");
        paint(canvas, e, l, h);
        canvas.addEventListener("click", openDetail.bind(null, l, h));
        canvas.addEventListener("keydown", (function (layer, head) {
          return function (event) {
            if (event.key === "Enter" || event.key === " ") { openDetail(layer, head); event.preventDefault(); }
          };
        })(l, h));
        grid.appendChild(canvas);
      }
    }
    drawScale($("grid-scale"), "viridis", 1, "attention weight", true);
  }
  function renderGrid() {
    Array.prototype.forEach.call($("grid").querySelectorAll("canvas.thumb"), function (c) {
      var l = Number(c.dataset.layer), h = Number(c.dataset.head);
      c.classList.toggle("selected", l === state.layer && (state.head < 0 || state.head === h));
    });
    if (state.detail) drawDetail();
  }
  function openDetail(layer, head) {
    state.detail = { layer: layer, head: head };
    state.layer = layer;
    state.head = head;
    $("detail").hidden = false;
    render();
  }
  function closeDetail() { state.detail = null; $("detail").hidden = true; }
  function drawDetail() {
    var e = state.example, ex = DATA.examples[e], L = ex.tokens.length, d = state.detail;
    var small = element("canvas");
    paint(small, e, d.layer, d.head);
    var canvas = $("detail-canvas"), ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
    var s = canvas.width / L; // the text / image boundary, on both axes
    ctx.strokeStyle = "rgba(255,255,255,0.8)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(ex.num_text * s, 0);
    ctx.lineTo(ex.num_text * s, canvas.height);
    ctx.moveTo(0, ex.num_text * s);
    ctx.lineTo(canvas.width, ex.num_text * s);
    ctx.stroke();
    $("detail-title").textContent = "layer " + d.layer + ", head " + d.head +
      ": query (row) \u2192 key (column); text first, then the image patches";
  }
  $("detail-canvas").addEventListener("mousemove", function (event) {
    if (!state.detail) return;
    var e = state.example, ex = DATA.examples[e], L = ex.tokens.length, rect = event.target.getBoundingClientRect();
    var i = Math.floor(((event.clientY - rect.top) / rect.height) * L);
    var j = Math.floor(((event.clientX - rect.left) / rect.width) * L);
    if (i < 0 || j < 0 || i >= L || j >= L) return;
    var w = matrix(e, state.detail.layer, state.detail.head)[i * L + j];
    $("detail-value").textContent = "query " + i + " \u201c" + ex.tokens[i] + "\u201d \u2192 key " + j + " \u201c" +
      ex.tokens[j] + "\u201d: " + (ex.keep[j] ? w.toFixed(3) : "masked (may not attend)");
  });

  // ------------------------------------------------------------------ colour scales
  function drawScale(box, name, top, label, withMasked) {
    box.textContent = "";
    var bar = element("canvas");
    bar.width = 180;
    bar.height = 12;
    var ctx = bar.getContext("2d");
    for (var x = 0; x < 180; x++) {
      ctx.fillStyle = css(colour(name, x / 179), 1);
      ctx.fillRect(x, 0, 1, 12);
    }
    var column = element("div");
    column.appendChild(bar);
    var ticks = element("div", "ticks");
    [0, 0.25, 0.5, 0.75, 1].forEach(function (f) { ticks.appendChild(element("span", "", format(f * top))); });
    column.appendChild(ticks);
    box.appendChild(column);
    box.appendChild(element("span", "", label));
    if (withMasked) {
      box.appendChild(element("span", "masked-key"));
      box.appendChild(element("span", "", "masked key (padding)"));
    }
  }

  // ------------------------------------------------------------------ everything
  function render() {
    if (built !== state.example) buildExample();
    var ex = DATA.examples[state.example];
    $("example").value = String(state.example);
    $("rollout").checked = state.rollout;
    Array.prototype.forEach.call($("layers").children, function (b) {
      b.setAttribute("aria-pressed", String(Number(b.dataset.layer) === state.layer));
    });
    Array.prototype.forEach.call($("heads").children, function (b) {
      var h = b.dataset.head === undefined ? -1 : Number(b.dataset.head);
      b.setAttribute("aria-pressed", String(h === state.head));
    });
    document.body.dataset.example = String(state.example);
    document.body.dataset.layer = String(state.layer);
    document.body.dataset.head = state.head < 0 ? "all" : String(state.head);
    document.body.dataset.rollout = String(state.rollout);
    var summary = $("summary");
    summary.textContent = "";
    summary.appendChild(element("span", "", "question: \u201c" + ex.question + "\u201d"));
    if (ex.prediction !== undefined) {
      var right = ex.truth === undefined ? "" : ex.truth === ex.prediction ? "right" : "wrong";
      summary.appendChild(element("span", right, "  \u2014  model: " + ex.prediction + " (p = " +
        ex.probability.toFixed(3) + ")"));
    }
    if (ex.truth !== undefined) summary.appendChild(element("span", "", "  \u2014  true answer: " + ex.truth));
    renderHeadView();
    renderCross();
    renderGrid();
  }

  try {
    buildControls();
    render();
    document.body.dataset.ready = "true";
  } catch (error) {
    report(error && error.stack ? error.stack : error);
  }
})();
