// cambatch gallery: filter, sort, group and paginate the run's images, all in the browser.
// Only the current page's cards exist in the document. The head data holds each class's first cards; the
// rest come in chunk scripts (data/chunk-*.js), loaded when a class is chosen or every image is asked for.
"use strict";
// The detail view's box layer: ground-truth boxes (inclusive pixel indices x0..x1) and the CAM box (edges),
// in displayed pixels, over a picture of w x h shown with object-fit: contain (hence "meet", centred).
// Numbers only: the markup holds nothing from file names or labels.
function boxesSvg(w, h, gt, cam) {
  if (!w || !h || (!gt && !cam)) return "";
  const rect = (cls, x0, y0, x1, y1, inclusive) =>
    `<rect class="${cls}" x="${x0}" y="${y0}" width="${x1 - x0 + inclusive}" height="${y1 - y0 + inclusive}"/>`;
  const boxes = (gt || []).map((b) => rect("gt", b[0], b[1], b[2], b[3], 1));
  if (cam) boxes.push(rect("cam", cam[0], cam[1], cam[2], cam[3], 0));
  return `<svg class="boxes" viewBox="0 0 ${w} ${h}" preserveAspectRatio="xMidYMid meet">${boxes.join("")}</svg>`;
}
(function () {
  const D = JSON.parse(document.getElementById("gallery-data").textContent);
  const labelled = D.labels.length > 0;
  const $ = (id) => document.getElementById(id);
  const pct = (v) => (v == null ? "–" : (v * 100).toFixed(1) + "%");
  const num = (v, d = 3) => (v == null ? "–" : v.toFixed(d));
  // File names may hold spaces, '#' or '?': encode each path segment, keep the slashes.
  const url = (p) => p.split("/").map((s) => (s === ".." ? s : encodeURIComponent(s))).join("/");

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c != null) el.append(c);
    return el;
  }

  // ---- the cards: arrays whose fields the head data names (D.fields), read into objects once ----
  function cards(data) {
    const named = (names, row) => { const o = {}; names.forEach((n, i) => { o[n] = row[i]; }); return o; };
    const list = data.images.map((row) => Object.assign(named(D.fields.image, row), { x: [] }));
    for (const row of data.explained) { const e = named(D.fields.explained, row); list[e.i].x.push(e); }
    return list;
  }
  const byClass = new Map();  // class id -> its cards: the sample until its chunks are in, then all
  const complete = new Set();  // classes whose chunks are all in
  const chunksOf = new Map();  // class id -> chunk numbers
  D.chunks.forEach(([c], k) => { if (!chunksOf.has(c)) chunksOf.set(c, []); chunksOf.get(c).push(k); });
  for (const im of cards(D.sample)) { if (!byClass.has(im.c)) byClass.set(im.c, []); byClass.get(im.c).push(im); }
  for (const c of D.classes.keys()) if (!chunksOf.has(c)) complete.add(c);
  let loadedCount = 0;
  for (const list of byClass.values()) loadedCount += list.length;

  const waiting = new Map();  // chunk number -> resolve
  window.cambatchGallery = { chunk(k, data) { const done = waiting.get(k); waiting.delete(k); if (done) done(data); } };
  function loadChunk(k) {
    return new Promise((resolve, reject) => {
      waiting.set(k, resolve);
      const script = h("script", { src: url(D.chunks[k][1]) });
      script.onerror = () => { waiting.delete(k); reject(new Error(`cannot load ${D.chunks[k][1]}`)); };
      script.onload = () => script.remove();
      document.head.append(script);
    });
  }
  async function loadClass(c) {
    if (complete.has(c)) return;
    const list = [];
    for (const k of chunksOf.get(c)) for (const im of cards(await loadChunk(k))) list.push(im);  // no spread: any size
    loadedCount += list.length - (byClass.get(c) || []).length;
    byClass.set(c, list);
    complete.add(c);
  }
  let loadingAll = false;
  async function loadAll() {
    loadingAll = true;
    let done = 0;
    for (const c of chunksOf.keys()) {
      await loadClass(c);
      if (++done % 20 === 0 && !D.meta.eager) render();  // show progress as classes come in
    }
    loadingAll = false;
    render();
  }
  function loaded() {
    const list = [];
    for (const cardsOfClass of byClass.values()) for (const im of cardsOfClass) list.push(im);
    return list;
  }

  // ---- state, kept in the URL's hash so a filtered view can be bookmarked or shared ----
  const defaults = { cls: "", cluster: "", label: "", correct: "", q: "", minp: "0",
    sort: "pr-desc", group: $("f-group").value, size: $("f-size").value, page: "0" };
  const state = Object.assign({}, defaults);
  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    for (const k of Object.keys(defaults)) state[k] = params.has(k) ? params.get(k) : defaults[k];
  }
  function writeHash() {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(state)) if (v !== defaults[k]) params.set(k, v);
    const text = params.toString();
    history.replaceState(null, "", text ? "#" + text : location.pathname + location.search);
  }

  // ---- filter options, from the groups' counts (every image, loaded or not) ----
  const classFlags = (name) => (D.groups.class[name] || {}).flags || "";
  const classId = new Map(D.classes.map((name, i) => [name, i]));
  for (const [name, stats] of Object.entries(D.groups.class).sort((a, b) => a[0].localeCompare(b[0]))) {
    const flag = stats.flags ? "  ⚠ " + stats.flags : "";
    $("f-class").append(h("option", { value: name, text: `${name} (${stats.n.toLocaleString()})${flag}` }));
  }
  // Map clusters (per class or label, cluster 0 the largest): as many choices as the most split group has.
  let clusterCount = 0;
  for (const groups of Object.values(D.groups)) for (const g of Object.values(groups)) clusterCount = Math.max(clusterCount, (g.cl || []).length);
  for (let k = 0; k < clusterCount; k++) $("f-cluster").append(h("option", { value: String(k), text: `cluster ${k + 1}` }));
  function clusterOf(im) {
    const [raw, group] = state.group === "label" ? [im.kl, im.l == null ? null : D.groups.label[D.labels[im.l]]]
      : [im.kc, D.groups.class[D.classes[im.c]]];
    return raw == null || raw < 0 || !group || !group.km ? null : group.km[raw];
  }
  if (labelled) {
    for (const [name, stats] of Object.entries(D.groups.label).sort((a, b) => a[0].localeCompare(b[0]))) {
      $("f-label").append(h("option", { value: name, text: `${name} (${stats.n.toLocaleString()})` }));
    }
  }

  // ---- the ordered list of loaded images the controls select ----
  const SORTS = {
    "pr-desc": (a, b) => b.pr - a.pr, "pr-asc": (a, b) => a.pr - b.pr,
    "be-desc": (a, b) => (b.be ?? -1) - (a.be ?? -1), "be-asc": (a, b) => (a.be ?? 2) - (b.be ?? 2),
    "aa-desc": (a, b) => (b.aa ?? -1) - (a.aa ?? -1), "en-desc": (a, b) => (b.en ?? -1) - (a.en ?? -1),
    "ok-asc": (a, b) => Number(a.ok ?? 2) - Number(b.ok ?? 2) || a.pr - b.pr,
    "p-asc": (a, b) => (a.p < b.p ? -1 : a.p > b.p ? 1 : 0),
  };
  function groupOf(im) {
    if (state.group === "class") return D.classes[im.c];
    if (state.group === "label") return im.l == null ? "(no label)" : D.labels[im.l];
    return "";
  }
  const groupSize = (name) => ((state.group === "none" ? null : D.groups[state.group][name]) || { n: 0 }).n;
  let shownPerGroup = new Map();  // images per group that pass the filters
  let considered = 0;  // the loaded images the filters were applied to
  function selection() {
    const q = state.q.trim().toLowerCase();
    const minp = parseFloat(state.minp) || 0;
    const pool = state.cls && state.cls !== "!flagged" ? (byClass.get(classId.get(state.cls)) || []) : loaded();
    considered = pool.length;
    const list = pool.filter((im) => {
      const cls = D.classes[im.c];
      if (state.cls === "!flagged" ? !classFlags(cls) : state.cls && cls !== state.cls) return false;
      if (state.cluster !== "" && clusterOf(im) !== parseInt(state.cluster, 10)) return false;
      if (state.label && (im.l == null || D.labels[im.l] !== state.label)) return false;
      if (state.correct === "correct" && im.ok !== true) return false;
      if (state.correct === "wrong" && im.ok !== false) return false;
      if (im.pr < minp) return false;
      if (q && !im.p.toLowerCase().includes(q) && !cls.toLowerCase().includes(q)) return false;
      return true;
    });
    // Group of each image computed once (the comparator runs n log n times).
    const group = new Map(list.map((im) => [im, groupOf(im)]));
    const size = new Map();
    for (const g of group.values()) size.set(g, (size.get(g) || 0) + 1);
    shownPerGroup = size;
    const bySort = SORTS[state.sort] || SORTS["pr-desc"];
    // Largest groups first (by their size in the run), then by name; the chosen sort within each group.
    return list.sort((a, b) => {
      const ga = group.get(a), gb = group.get(b);
      if (ga !== gb) return groupSize(gb) - groupSize(ga) || size.get(gb) - size.get(ga) || (ga < gb ? -1 : 1);
      return bySort(a, b) || (a.p < b.p ? -1 : 1);
    });
  }

  // ---- rendering ----
  let current = [];
  function groupHeader(name, continued) {
    const stats = (state.group === "none" ? null : D.groups[state.group][name]) || null;
    const parts = [];
    if (stats) {
      const shown = shownPerGroup.get(name) || 0;
      const count = `${stats.n.toLocaleString()} image${stats.n === 1 ? "" : "s"}`;
      parts.push(shown === stats.n ? count : `${shown.toLocaleString()} shown of ${count}`, `avg ${pct(stats.pr)}`);
      if (stats.acc != null) parts.push(`acc ${pct(stats.acc)}`);
      parts.push(`border ${num(stats.be, 2)}`);
      if (stats.pl != null) parts.push(`position lock ${num(stats.pl, 2)}`);
    }
    const title = name + (continued ? " (continued)" : "");
    const more = state.group === "class" && !complete.has(classId.get(name))
      ? h("button", { type: "button", class: "more", "data-testid": "load-class", text: "show all of this class",
        onclick: () => { state.cls = name; state.page = "0"; syncControls(); update(); } })
      : null;
    const head = h("div", { class: "group", "data-group": name },
      h("h2", { title, text: title },
        ...(stats && stats.flags ? stats.flags.split(", ").map((f) => h("span", { class: "flag", title: flagHelp(f), text: "⚠ " + f })) : [])),
      h("div", { class: "stats", title: parts.join(" · "), text: parts.join(" · ") }, more ? " " : null, more));
    if (!stats || !stats.mm || continued) return head;
    // The group opens with its mean map and, where its maps form clusters, one strip per cluster.
    const byPath = new Map();
    for (const im of byClass.get(classId.get(name)) || []) byPath.set(im.p, im);
    if (state.group === "label") for (const im of loaded()) if (im.l != null && D.labels[im.l] === name) byPath.set(im.p, im);
    const mean = h("figure", { class: "mean-map", "data-testid": "mean-map" },
      h("img", { src: url(stats.mm), alt: `mean map of ${name}`, width: 96, height: 96 }),
      h("figcaption", { text: "mean map" }));
    const strips = (stats.cl || []).map((c, k) => h("div", { class: "strip", "data-cluster": k },
      h("img", { class: "strip-map", src: url(c.mm), alt: `cluster ${k + 1} mean map`, width: 48, height: 48 }),
      h("span", { class: "strip-label", text: `cluster ${k + 1} · ${c.n.toLocaleString()} image${c.n === 1 ? "" : "s"}` }),
      ...c.ex.map((p) => byPath.get(p)).filter((im) => im && im.t)
        .map((im) => h("img", { class: "strip-example", src: url(im.t), alt: im.p, title: im.p, loading: "lazy", width: 64, height: 48 }))));
    return h("div", { class: "group-head" }, mean, h("div", { class: "group-text" }, head, ...strips));
  }
  function flagHelp(flag) {
    const m = D.meta;
    if (flag === "fixed-location") return `position lock ≥ ${m.lock_score}: its maps sit at the same place in every image`;
    return flag === "border"
      ? `mean border energy ≥ ${m.border_ratio}× the median (${num(m.median_border_energy)})`
      : `mean active area ≥ ${m.spread_ratio}× the median (${num(m.median_active_area)})`;
  }
  const NO_THUMBNAIL = { 0: "no thumbnail yet: cambatch gallery --all", "-1": "no overlay" };
  function card(im, index) {
    const cls = D.classes[im.c];
    const hotBorder = D.meta.median_border_energy != null && im.be != null && im.be >= D.meta.border_ratio * D.meta.median_border_energy;
    const img = im.t
      ? h("img", { src: url(im.t), alt: `${cls}: ${im.p}`, loading: "lazy", decoding: "async", width: 320, height: 240 })
      : h("span", { class: "noimg", text: NO_THUMBNAIL[im.tn] || NO_THUMBNAIL[-1] });
    const el = h("article", {
      class: "card" + (im.ok === false ? " wrong" : ""), tabindex: 0, "data-class": cls, "data-path": im.p,
      onclick: () => openDetail(index), onkeydown: (e) => { if (e.key === "Enter") openDetail(index); },
    },
      h("div", { class: "frame" }, img),
      h("div", { class: "body" },
        h("div", { class: "cls", title: cls, text: cls }),
        h("div", { class: "bar" }, h("span", { style: `width:${(im.pr * 100).toFixed(1)}%` })),
        h("div", { class: "row" },
          h("span", { text: pct(im.pr) }),
          h("span", { class: hotBorder ? "hot" : null, title: "border energy", text: "border " + num(im.be, 2) })),
        labelled && im.l != null
          ? h("div", { class: "truth" }, h("span", { class: im.ok ? "good" : "bad", text: im.ok ? "✓ " : "✗ " }), "label " + D.labels[im.l])
          : null,
        h("div", { class: "path mono", title: im.p, text: im.p })));
    if (im.o && im.t) {  // hover: the photo itself, to see what the heatmap covers
      el.addEventListener("mouseenter", () => { img.src = url(im.o); });
      el.addEventListener("mouseleave", () => { img.src = url(im.t); });
    }
    return el;
  }
  function coverage() {
    // What the page holds of the run, and what it leaves out until asked.
    const left = D.meta.ok - loadedCount;
    const parts = [`${loadedCount.toLocaleString()} of ${D.meta.ok.toLocaleString()} images loaded`];
    if (left > 0) parts.push(`${left.toLocaleString()} left out: choose a class, or load all`);
    if (loadingAll) parts.push("loading…");
    const thumbs = D.meta.thumbnails;
    if (thumbs < D.meta.ok) parts.push(`thumbnails for ${thumbs.toLocaleString()} (the first ${D.meta.sample_per_class} of each class and the cluster examples; cambatch gallery --all makes the rest)`);
    $("coverage").textContent = parts.join(" · ");
    $("load-all").hidden = left <= 0 || loadingAll;
  }
  function render() {
    current = selection();
    const size = parseInt(state.size, 10) || 60;
    const pages = Math.max(1, Math.ceil(current.length / size));
    const page = Math.min(Math.max(0, parseInt(state.page, 10) || 0), pages - 1);
    state.page = String(page);
    const start = page * size, end = Math.min(current.length, start + size);
    const grid = $("grid");
    grid.replaceChildren();
    if (!current.length) grid.append(h("p", { class: "empty", text: "No image matches these filters." }));
    // Each group is a section sized to its cards, so small groups sit side by side.
    let group = null, box = null, section = null;
    for (let i = start; i < end; i++) {
      const g = groupOf(current[i]);
      if (box === null || g !== group) {
        section = h("section", { class: "group-box" + (state.group === "none" ? " wide" : "") });
        if (state.group !== "none") section.append(groupHeader(g, i === start && i > 0 && groupOf(current[i - 1]) === g));
        box = h("div", { class: "cards" });
        section.append(box);
        grid.append(section);
        group = g;
      }
      box.append(card(current[i], i));
      section.style.setProperty("--cols", box.childElementCount);
    }
    const of = considered < D.meta.ok && !(state.cls && complete.has(classId.get(state.cls)))
      ? ` (${considered.toLocaleString()} loaded)` : "";
    const text = current.length
      ? `${(start + 1).toLocaleString()}–${end.toLocaleString()} of ${current.length.toLocaleString()}${of} · page ${page + 1}/${pages}`
      : "0 images";
    $("count").textContent = $("count2").textContent = text;
    for (const id of ["prev", "prev2"]) $(id).disabled = page === 0;
    for (const id of ["next", "next2"]) $(id).disabled = page >= pages - 1;
    coverage();
    writeHash();
  }
  // A chosen class is loaded whole before it is shown.
  async function update() {
    const c = classId.get(state.cls);
    if (c != null && !complete.has(c)) {
      $("count").textContent = `loading ${state.cls}…`;
      await loadClass(c);
    }
    render();
  }

  // ---- detail view: the photo beside every explained class's full-size overlay ----
  let open = -1;
  function figure(src, caption, alt, layer) {
    let picture = h("div", { class: "missing", text: "not available" });
    if (src) {
      const img = h("img", { src: url(src), alt, loading: "lazy" });
      img.onerror = () => picture.replaceWith(h("div", { class: "missing", text: "not available" }));
      picture = h("div", { class: "picture" }, img);
      if (layer) picture.insertAdjacentHTML("beforeend", layer);
    }
    return h("figure", {}, picture, h("figcaption", {}, ...caption));
  }
  function openDetail(index) {
    open = index;
    const im = current[index];
    $("d-title").textContent = `${im.p}${im.w ? `  ·  ${im.w}×${im.h}` : ""}  ·  ${index + 1} of ${current.length}`;
    const body = $("d-body");
    body.replaceChildren();
    const truth = im.l != null ? [h("span", { class: "k", text: " · label " }), h("span", { class: im.ok ? "good" : "bad", text: D.labels[im.l] + (im.ok ? " ✓" : " ✗") })] : [];
    const boxed = im.g ? [h("span", { class: "k", text: " · " }), h("span", { class: "gt-key", text: `${im.g.length} ground-truth box${im.g.length > 1 ? "es" : ""}` })] : [];
    body.append(figure(im.o, [h("b", { text: "photo" }), ...truth, ...boxed], im.p, boxesSvg(im.w, im.h, im.g, null)));
    for (const e of im.x) {
      body.append(figure(e.overlay, [
        h("b", { text: `top ${e.rank} · ${D.classes[e.c]}` }), ` ${pct(e.pr)}`, h("br"),
        h("span", { class: "k", text: "border " }), num(e.be), h("span", { class: "k", text: " · area " }), num(e.aa),
        h("span", { class: "k", text: " · entropy " }), num(e.en),
        e.overlay ? h("span", {}, " · ", h("a", { href: url(e.overlay), target: "_blank", text: "full size" })) : null,
      ], `${D.classes[e.c]}: ${im.p}`, boxesSvg(im.w, im.h, im.g, e.box)));
    }
    $("d-prev").disabled = index === 0;
    $("d-next").disabled = index >= current.length - 1;
    if (!$("detail").open) $("detail").showModal();
  }
  $("d-close").onclick = () => $("detail").close();
  $("d-prev").onclick = () => open > 0 && openDetail(open - 1);
  $("d-next").onclick = () => open < current.length - 1 && openDetail(open + 1);
  $("detail").addEventListener("click", (e) => { if (e.target === $("detail")) $("detail").close(); });

  // ---- controls ----
  const controls = { "f-class": "cls", "f-cluster": "cluster", "f-label": "label", "f-correct": "correct", "f-text": "q", "f-prob": "minp", "f-sort": "sort", "f-group": "group", "f-size": "size" };
  function syncControls() {
    for (const [id, key] of Object.entries(controls)) if ($(id)) $(id).value = state[key];
    $("f-prob-out").textContent = (parseFloat(state.minp) || 0).toFixed(2);
  }
  let typing = null;  // the search waits for a pause in typing: each render filters every loaded image
  for (const [id, key] of Object.entries(controls)) {
    if (!$(id)) continue;
    $(id).addEventListener("input", () => {
      state[key] = $(id).value;
      state.page = "0";
      $("f-prob-out").textContent = (parseFloat(state.minp) || 0).toFixed(2);
      clearTimeout(typing);
      if (id === "f-text") typing = setTimeout(update, 250);
      else update();
    });
  }
  $("load-all").onclick = () => { loadAll(); render(); };
  const turn = (delta) => { state.page = String((parseInt(state.page, 10) || 0) + delta); render(); window.scrollTo(0, 0); };
  $("prev").onclick = $("prev2").onclick = () => turn(-1);
  $("next").onclick = $("next2").onclick = () => turn(1);
  document.addEventListener("keydown", (e) => {
    if (/^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName)) return;
    const dialog = $("detail").open;
    if (e.key === "ArrowLeft") dialog ? $("d-prev").click() : !$("prev").disabled && turn(-1);
    if (e.key === "ArrowRight") dialog ? $("d-next").click() : !$("next").disabled && turn(1);
  });
  window.addEventListener("hashchange", () => { readHash(); syncControls(); update(); });

  readHash();
  syncControls();
  if (D.meta.eager) loadAll(); else update();
})();
