// clipsql web app: the few things that change in place. Every page works without this script
// (links and forms carry the settings); with it, the gallery pages and shuffles through the JSON
// API, a result opens large in a dialog, and the analytics panel draws its charts as SVG.
"use strict";

(function () {
  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));
  const form = $("#query-form");
  const SETTINGS = ["key_set", "join_set", "model", "metric", "predicate", "k", "radius", "method"];

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function svgEl(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  }

  // The current settings as URL parameters (what a link to a new key must keep).
  function settingsParams() {
    // Read the fields themselves, not FormData: the inactive predicate's field is disabled but its value
    // (k, or the threshold) should survive a change of key.
    const params = new URLSearchParams();
    if (!form) return params;
    for (const field of form.elements) {
      if (!SETTINGS.includes(field.name) || field.value === "") continue;
      if ((field.type === "radio" || field.type === "checkbox") && !field.checked) continue;
      params.append(field.name, field.value);
    }
    return params;
  }

  function searchUrl(extra) {
    const params = new URLSearchParams(extra);
    for (const [name, value] of settingsParams()) params.append(name, value);
    return "/search?" + params.toString();
  }

  async function getJson(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({ error: response.statusText }));
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  // -- settings: predicate, metric and the threshold slider --------------------------------------------------
  function setupSettings() {
    if (!form) return;
    const radius = $("#radius", form);
    const output = $("#radius-value", form);
    const k = $("#k", form);
    let metric = (form.querySelector("input[name=metric]:checked") || {}).value || "cosine";
    const show = () => { output.value = Number(radius.value).toFixed(3); };
    const predicateChanged = () => {
      const predicate = (form.querySelector("input[name=predicate]:checked") || {}).value;
      k.disabled = predicate !== "knn";
      radius.disabled = predicate !== "range";
      form.dataset.predicate = predicate;
    };
    radius.addEventListener("input", show);
    radius.addEventListener("focus", () => { form.querySelector("input[name=predicate][value=range]").checked = true; predicateChanged(); });
    k.addEventListener("focus", () => { form.querySelector("input[name=predicate][value=knn]").checked = true; predicateChanged(); });
    $$("input[name=predicate]", form).forEach((input) => input.addEventListener("change", predicateChanged));
    // Cosine distance d and L2 distance of unit vectors are tied by L2 = sqrt(2 d): switching the metric
    // keeps the threshold meaning the same photos.
    $$("input[name=metric]", form).forEach((input) => input.addEventListener("change", () => {
      const value = Number(radius.value);
      const converted = input.value === "l2" && metric === "cosine" ? Math.sqrt(2 * value)
        : input.value === "cosine" && metric === "l2" ? value * value / 2 : value;
      metric = input.value;
      radius.value = Math.min(Number(radius.max), Math.max(Number(radius.min), converted)).toFixed(3);
      show();
    }));
    // Enter in a query field presses that query's button, not the form's first one.
    for (const [field, button] of [["#text", "#search-text"], ["#minus", "#search-text"], ["#image_url", "#search-url"]]) {
      const input = $(field, form);
      if (input) input.addEventListener("keydown", (event) => {
        if (event.key === "Enter") { event.preventDefault(); $(button, form).click(); }
      });
    }
    // Text search needs a model with a text tower (CLIP); say so instead of failing after submit.
    const model = $("#model", form);
    const textAllowed = () => {
      const option = model.options[model.selectedIndex];
      const allowed = !option || option.dataset.text === "yes";
      for (const id of ["#text", "#minus", "#search-text"]) $(id, form).disabled = !allowed;
      $("#text-hint", form).hidden = allowed;
    };
    model.addEventListener("change", textAllowed);
    textAllowed();
    // Disabled inputs are not submitted: enable them again just before the form goes.
    form.addEventListener("submit", () => { k.disabled = false; radius.disabled = false; });
    predicateChanged();
    show();
  }

  // -- start page: the gallery ---------------------------------------------------------------------------
  function setupGallery() {
    const gallery = $("#gallery");
    if (!gallery) return;
    const filter = $("#gallery-filter");
    const status = $("#gallery-status");
    const prev = $("#gallery-prev");
    const next = $("#gallery-next");
    let state = { page: Number(gallery.dataset.page), pages: Number(gallery.dataset.pages), seed: Number(gallery.dataset.seed) };

    async function load(page, seed) {
      const params = new URLSearchParams();
      const data = new FormData(form);
      for (const value of data.getAll("key_set")) params.append("key_set", value);
      params.set("model", data.get("model") || "");
      params.set("q", filter.value.trim());
      params.set("page", page);
      params.set("seed", seed);
      gallery.classList.add("loading");
      try {
        const body = await getJson("/api/gallery?" + params.toString());
        state = { page: body.page, pages: body.pages, seed: body.seed };
        gallery.replaceChildren(...body.photos.map((p) => el("a", {
          class: "tile", href: searchUrl({ photo_id: p.photo_id }), "data-photo-id": p.photo_id,
          title: p.description || p.photo_id,
        }, [el("img", { src: p.thumb, alt: p.description || p.photo_id, loading: "lazy" })])));
        if (!body.photos.length) gallery.append(el("p", { class: "empty", text: "No photos in this set match." }));
        status.textContent = `page ${body.page} of ${body.pages} · ${body.total} photos`;
        prev.classList.toggle("disabled", body.page <= 1);
        next.classList.toggle("disabled", body.page >= body.pages);
        gallery.dataset.page = body.page;
        gallery.dataset.pages = body.pages;
        gallery.dataset.seed = body.seed;
      } catch (error) {
        gallery.replaceChildren(el("p", { class: "error", text: error.message }));
      } finally {
        gallery.classList.remove("loading");
      }
    }

    $("#gallery-form").addEventListener("submit", (event) => { event.preventDefault(); load(1, state.seed); });
    $("#gallery-shuffle").addEventListener("click", (event) => {
      event.preventDefault();
      load(1, 1 + Math.floor(Math.random() * 2147483646));
    });
    prev.addEventListener("click", (event) => { event.preventDefault(); if (state.page > 1) load(state.page - 1, state.seed); });
    next.addEventListener("click", (event) => { event.preventDefault(); if (state.page < state.pages) load(state.page + 1, state.seed); });
    $("#key_set").addEventListener("change", () => load(1, state.seed));
    $("#model").addEventListener("change", () => load(1, state.seed));
    // A tile's link is rebuilt on click so the settings changed since the page loaded come along.
    gallery.addEventListener("click", (event) => {
      const tile = event.target.closest("a.tile");
      if (!tile) return;
      event.preventDefault();
      window.location.href = searchUrl({ photo_id: tile.dataset.photoId });
    });
  }

  // -- results page: a result opened large -------------------------------------------------------------------
  function setupDialog() {
    const dialog = $("#photo-dialog");
    if (!dialog) return;
    const facts = $("#dialog-facts");

    async function open(photoId, distance) {
      $("#dialog-title").textContent = photoId;
      facts.replaceChildren(el("dd", { text: "loading…" }));
      $("#dialog-image").src = `/thumbs/${encodeURIComponent(photoId)}?size=large`;
      $("#dialog-image").alt = photoId;
      $("#dialog-make-key").href = searchUrl({ photo_id: photoId });
      if (!dialog.open) dialog.showModal();
      try {
        const info = await getJson(`/api/photos/${encodeURIComponent(photoId)}`);
        $("#dialog-title").textContent = info.photo_description || info.ai_description || info.photo_id;
        const place = info.photo_location_name
          || [info.photo_location_city, info.photo_location_country].filter(Boolean).join(", ");
        const rows = [
          ["photo", info.photo_id],
          ["distance", distance === undefined ? "" : Number(distance).toFixed(4)],
          ["photographer", [info.photographer_name, info.photographer_username && "@" + info.photographer_username].filter(Boolean).join(" ")],
          ["description", info.photo_description || info.ai_description],
          ["keywords", info.keywords.join(", ")],
          ["collections", info.collections.join(", ")],
          ["downloads", String(info.downloads)],
          ["place", place],
          ["size", info.photo_width && info.photo_height ? `${info.photo_width} × ${info.photo_height}` : ""],
          ["submitted", info.photo_submitted_at || ""],
        ];
        facts.replaceChildren();
        for (const [name, value] of rows) {
          if (!value) continue;
          facts.append(el("dt", { text: name }), el("dd", { text: value, "data-fact": name }));
        }
      } catch (error) {
        facts.replaceChildren(el("dd", { class: "error", text: error.message }));
      }
    }

    document.addEventListener("click", (event) => {
      const target = event.target.closest("a.result, a.open-photo");
      if (!target) return;
      event.preventDefault();
      open(target.dataset.photoId, target.dataset.distance);
    });
    dialog.addEventListener("click", (event) => { if (event.target === dialog) dialog.close(); });
  }

  // -- results page: the analytics charts --------------------------------------------------------------------
  function barChart(container, items, options) {
    container.replaceChildren();
    if (!items.length) {
      container.append(el("p", { class: "empty", text: options.empty }));
      return;
    }
    const row = 22, labelWidth = options.labelWidth || 150, width = 560, valueWidth = 56;
    const height = items.length * row + 8;
    const max = Math.max(1, ...items.map((item) => item.value));
    const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", "aria-label": options.title });
    items.forEach((item, i) => {
      const y = 4 + i * row;
      const barWidth = Math.max(item.value > 0 ? 2 : 0, (width - labelWidth - valueWidth) * item.value / max);
      const group = svgEl("g", { class: "bar" + (item.highlight ? " highlight" : ""), "data-label": item.label, "data-value": item.value });
      const label = svgEl("text", { x: labelWidth - 8, y: y + row / 2 + 4, "text-anchor": "end", class: "label" });
      label.textContent = item.label.length > 22 ? item.label.slice(0, 21) + "…" : item.label;
      const title = svgEl("title");
      title.textContent = `${item.label}: ${item.value}`;
      const bar = svgEl("rect", { x: labelWidth, y: y + 3, width: barWidth, height: row - 6, rx: 3 });
      const value = svgEl("text", { x: labelWidth + barWidth + 6, y: y + row / 2 + 4, class: "value" });
      value.textContent = String(item.value);
      group.append(title, label, bar, value);
      svg.append(group);
    });
    container.append(svg);
  }

  async function setupAnalytics() {
    const panel = $("#analytics");
    if (!panel) return;
    const ids = panel.dataset.ids.split(" ").filter(Boolean).slice(0, 100);
    const downloads = $("#chart-downloads");
    const keywords = $("#chart-keywords");
    if (!ids.length) {
      downloads.replaceChildren(el("p", { class: "empty", text: "No results to analyse." }));
      keywords.replaceChildren();
      return;
    }
    const params = new URLSearchParams();
    ids.forEach((id) => params.append("ids", id));
    params.set("n", "5");
    try {
      const body = await getJson("/api/analytics?" + params.toString());
      barChart(downloads, body.downloads.map((row, i) => ({
        label: `#${i + 1} ${row.photo_id}`, value: row.downloads, highlight: row.photo_id === body.most_downloaded,
      })), { title: "downloads per result", empty: "No downloads." });
      if (body.most_downloaded) {
        $("#keywords-caption").textContent =
          `Top download keywords of ${body.most_downloaded} (${body.most_downloaded_downloads} downloads, the most downloaded result)`;
      }
      barChart(keywords, body.keywords.map((row) => ({ label: row.keyword, value: row.downloads })),
        { title: "top download keywords", empty: body.most_downloaded ? "Its downloads carry no search keyword." : "None of the results was downloaded." });
      panel.dataset.ready = "yes";
    } catch (error) {
      downloads.replaceChildren(el("p", { class: "error", text: error.message }));
      keywords.replaceChildren();
    }
  }

  setupSettings();
  setupGallery();
  setupDialog();
  setupAnalytics();
})();
