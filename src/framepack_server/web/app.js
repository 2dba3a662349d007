// The FramePack page: a client of this server's public WaveSpeed-style API, nothing more.
// Every call sends the API key (kept in localStorage) as `Authorization: Bearer <key>`; outputs,
// uploads and previews come back as signed URLs that load without it.
"use strict";

(() => {
  const KEY_STORAGE = "framepack.apiKey";
  const CURRENT_JOB = "framepack.currentJob";
  const POLL_MS = 700;
  const HISTORY_PAGE_SIZE = 20;
  const TERMINAL = ["completed", "failed", "cancelled"];
  const MODEL_NAMES = { "wavespeed-ai/framepack": "FramePack", "wavespeed-ai/framepack-f1": "FramePack F1" };
  // The request fields the form sends, with the types the API expects.
  const INT_FIELDS = ["seed", "num_inference_steps", "num_frames", "latent_window_size"];
  const FLOAT_FIELDS = ["guidance_scale", "true_cfg_scale", "teacache_threshold"];
  const TEXT_FIELDS = ["prompt", "negative_prompt", "aspect_ratio", "resolution", "sampler"];
  const ADVANCED_DEFAULTS = {
    true_cfg_scale: 1, sampler: "unipc", latent_window_size: 9, enable_teacache: false, teacache_threshold: 0.15,
  };

  const scrollBehavior = () => (matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth");
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const form = $("#gen-form");
  const output = $("#output");

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message, field) {
      super(message);
      this.status = status; // 0: the server could not be reached
      this.field = field || null;
    }
  }

  const apiKey = () => (localStorage.getItem(KEY_STORAGE) || "").trim();

  async function api(path, { method = "GET", json, formData } = {}) {
    const headers = { Accept: "application/json" };
    const key = apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (formData) {
      body = formData;
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body, cache: "no-store" });
    } catch {
      const error = new ApiError(0, `Cannot reach the server at ${location.origin}. Is \`framepack serve\` running?`);
      showBanner(error.message);
      throw error;
    }
    hideBanner();
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      /* not JSON: a proxy's page, say */
    }
    if (!response.ok) {
      const message = (payload && payload.message) || `${response.status} ${response.statusText}`;
      const error = new ApiError(response.status, message, payload && payload.field);
      if (response.status === 401) keyRefused(error.message);
      throw error;
    }
    return payload;
  }

  function fieldMessage(error) {
    // Our 400s say "field: reason"; next to the field, the reason is enough.
    const prefix = `${error.field}: `;
    return error.field && error.message.startsWith(prefix) ? error.message.slice(prefix.length) : error.message;
  }

  // ---------------------------------------------------------------- banner and key

  function showBanner(text) {
    const banner = $("#banner");
    banner.textContent = text;
    banner.hidden = false;
  }

  function hideBanner() {
    $("#banner").hidden = true;
  }

  function setKeyState(text, kind) {
    const state = $("#key-state");
    state.textContent = text;
    state.dataset.kind = kind || "";
    $("#api-key").setAttribute("aria-invalid", kind === "bad" ? "true" : "false");
  }

  function keyRefused(message) {
    const where = "Paste the key `framepack serve` printed, or make one with `framepack keys create --name me`.";
    if (apiKey()) setKeyState(`The server refused this API key (401: ${message}). ${where}`, "bad");
    else setKeyState(`This server needs an API key. ${where}`, "need");
  }

  function initKey() {
    const input = $("#api-key");
    input.value = apiKey();
    $("#key-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (value) localStorage.setItem(KEY_STORAGE, value);
      else localStorage.removeItem(KEY_STORAGE);
      setKeyState("Checking…", "");
      if (await loadHistory()) setKeyState(value ? "Key saved and accepted." : "No key needed on this server.", "ok");
    });
    $("#key-show").addEventListener("click", (event) => {
      const show = input.type === "password";
      input.type = show ? "text" : "password";
      event.currentTarget.textContent = show ? "Hide" : "Show";
      event.currentTarget.setAttribute("aria-pressed", String(show));
    });
  }

  // ---------------------------------------------------------------- field errors

  function clearErrors() {
    $$(".error[data-error-for]", form).forEach((el) => (el.textContent = ""));
    $$("[aria-invalid=true]", form).forEach((el) => el.removeAttribute("aria-invalid"));
    $$(".field.invalid", form).forEach((el) => el.classList.remove("invalid"));
  }

  function showFieldError(field, message) {
    const slot = field && $(`.error[data-error-for="${CSS.escape(field)}"]`, form);
    if (!slot) {
      $("#form-error").textContent = field && field !== "body" ? `${field}: ${message}` : message;
      return;
    }
    slot.textContent = message;
    const box = slot.closest(".field");
    if (box) {
      box.classList.add("invalid");
      const input = $(`[name="${CSS.escape(field)}"]`, box) || $("input, select, textarea", box);
      if (input) input.setAttribute("aria-invalid", "true");
      if (field in ADVANCED_DEFAULTS) $("#advanced").open = true;
    }
  }

  function revealFirstError() {
    const first = $(".field.invalid", form) || ($("#form-error").textContent ? $("#form-error") : null);
    if (first) first.scrollIntoView({ block: "center", behavior: scrollBehavior() });
  }

  function showError(error, fallbackField = "_form") {
    if (error.status === 0) return; // the banner says it
    if (error.status === 401) {
      showFieldError(fallbackField, "Not authorised: check the API key at the top of the page.");
      return;
    }
    if (error.status === 400 && error.field) {
      showFieldError(error.field, fieldMessage(error));
      return;
    }
    showFieldError(fallbackField, error.status ? `${error.message} (HTTP ${error.status})` : error.message);
  }

  // ---------------------------------------------------------------- image inputs

  class ImageInput {
    constructor(root, field) {
      this.root = root;
      this.field = field;
      this.drop = $(".drop", root);
      this.file = $(".file-input", root);
      this.url = $(".url-input", root);
      this.preview = $(".drop-preview", root);
      this.clearButton = $(".drop-clear", root);
      this.status = $(".status", root);
      this.pending = null;
      this.objectUrl = null;
      this.drop.addEventListener("click", (event) => {
        if (!event.target.closest(".drop-clear")) this.file.click();
      });
      this.drop.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          this.file.click();
        }
      });
      this.file.addEventListener("change", () => {
        if (this.file.files.length) this.upload(this.file.files[0]);
      });
      for (const type of ["dragenter", "dragover"]) {
        this.drop.addEventListener(type, (event) => {
          event.preventDefault();
          this.drop.classList.add("dragging");
        });
      }
      for (const type of ["dragleave", "drop"]) {
        this.drop.addEventListener(type, () => this.drop.classList.remove("dragging"));
      }
      this.drop.addEventListener("drop", (event) => {
        event.preventDefault();
        const file = event.dataTransfer.files[0];
        if (file) this.upload(file);
        else {
          const text = event.dataTransfer.getData("text/uri-list") || event.dataTransfer.getData("text/plain");
          if (text) this.setUrl(text.trim());
        }
      });
      this.url.addEventListener("change", () => this.setUrl(this.url.value.trim(), { keepStatus: false }));
      this.clearButton.addEventListener("click", () => this.clear());
    }

    get value() {
      return this.url.value.trim();
    }

    showPreview(src) {
      this.preview.src = src;
      this.preview.hidden = !src;
      this.clearButton.hidden = !src;
      this.drop.classList.toggle("has-image", Boolean(src));
    }

    setUrl(url, { keepStatus = false } = {}) {
      this.url.value = url;
      if (!keepStatus) this.status.textContent = "";
      this.showPreview(url);
    }

    clear() {
      this.url.value = "";
      this.file.value = "";
      this.status.textContent = "";
      this.pending = null;
      this.showPreview("");
    }

    upload(file) {
      clearFieldError(this.field);
      if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
      this.objectUrl = URL.createObjectURL(file);
      this.showPreview(this.objectUrl);
      this.url.value = "";
      this.status.textContent = `Uploading ${file.name}…`;
      this.status.dataset.kind = "busy";
      const data = new FormData();
      data.append("file", file, file.name);
      const job = api("api/v3/media/upload/binary", { method: "POST", formData: data })
        .then((payload) => {
          if (this.pending !== job) return;
          this.url.value = payload.data.download_url;
          this.status.textContent = `Uploaded ${file.name} (${formatBytes(payload.data.size)})`;
          this.status.dataset.kind = "ok";
        })
        .catch((error) => {
          if (this.pending !== job) return;
          this.status.textContent = "";
          this.showPreview("");
          this.file.value = "";
          showFieldError(this.field, `Upload failed: ${error.status === 400 ? fieldMessage(error) : error.message}`);
        })
        .finally(() => {
          if (this.pending === job) this.pending = null;
        });
      this.pending = job;
    }
  }

  function clearFieldError(field) {
    const slot = $(`.error[data-error-for="${field}"]`, form);
    if (slot) slot.textContent = "";
    const box = slot && slot.closest(".field");
    if (box) box.classList.remove("invalid");
  }

  // ---------------------------------------------------------------- the form

  let startImage;
  let endImage;

  const selectedModel = () => $("input[name=model]:checked", form).value;

  function syncModel() {
    const f1 = selectedModel() === "wavespeed-ai/framepack-f1";
    $("#last-image-field").hidden = f1;
    $("#f1-note").hidden = !f1;
  }

  function syncDuration() {
    const frames = Number($("#num_frames").value);
    $("#duration-out").textContent = Number.isFinite(frames) && frames > 0 ? `≈ ${(frames / 30).toFixed(1)} s` : "";
  }

  function initRanges() {
    for (const range of $$("input[type=range][data-for]", form)) {
      const number = $(`#${range.dataset.for}`);
      range.addEventListener("input", () => {
        number.value = range.value;
        number.dispatchEvent(new Event("input", { bubbles: true }));
      });
      number.addEventListener("input", () => {
        if (number.value !== "") range.value = number.value;
      });
    }
  }

  function syncRanges() {
    for (const range of $$("input[type=range][data-for]", form)) {
      const number = $(`#${range.dataset.for}`);
      if (number.value !== "") range.value = number.value;
    }
    syncDuration();
  }

  function readForm() {
    const body = {};
    const problems = [];
    for (const name of TEXT_FIELDS) body[name] = form.elements[name].value;
    for (const name of [...INT_FIELDS, ...FLOAT_FIELDS]) {
      const input = form.elements[name];
      if (input.validity.badInput) problems.push([name, "Enter a number."]);
      else if (input.value.trim() !== "") body[name] = Number(input.value);
    }
    body.enable_safety_checker = form.elements.enable_safety_checker.checked;
    body.enable_teacache = form.elements.enable_teacache.checked;
    body.image = startImage.value;
    if (!body.image) problems.push(["image", "Choose or drop an image, or paste its URL."]);
    if (!body.prompt.trim()) problems.push(["prompt", "Describe what should happen in the video."]);
    const model = selectedModel();
    if (model === "wavespeed-ai/framepack" && endImage.value) body.last_image = endImage.value;
    return { model, body, problems };
  }

  function fillForm(input, model) {
    clearErrors();
    const radio = $(`input[name=model][value="${CSS.escape(model)}"]`, form);
    if (radio) radio.checked = true;
    for (const name of [...TEXT_FIELDS, ...INT_FIELDS, ...FLOAT_FIELDS]) {
      if (input[name] !== undefined && input[name] !== null) form.elements[name].value = String(input[name]);
    }
    if (input.enable_safety_checker !== undefined) form.elements.enable_safety_checker.checked = input.enable_safety_checker;
    form.elements.enable_teacache.checked = Boolean(input.enable_teacache);
    if (input.image) startImage.setUrl(input.image);
    if (input.last_image) endImage.setUrl(input.last_image);
    else endImage.clear();
    $("#advanced").open = Object.entries(ADVANCED_DEFAULTS).some(
      ([name, value]) => input[name] !== undefined && String(input[name]) !== String(value),
    );
    syncModel();
    syncRanges();
  }

  async function submit() {
    clearErrors();
    const button = $("#generate");
    button.disabled = true;
    button.textContent = "Submitting…";
    try {
      await Promise.all([startImage.pending, endImage.pending].filter(Boolean));
      const { model, body, problems } = readForm();
      if (problems.length) {
        problems.forEach(([field, message]) => showFieldError(field, message));
        revealFirstError();
        return;
      }
      const payload = await api(`api/v3/${model}`, { method: "POST", json: body });
      track(payload.data);
      loadHistory();
      // One column (phones): the progress is below the form; bring it into view.
      if (window.matchMedia("(max-width: 900px)").matches) output.scrollIntoView({ behavior: scrollBehavior(), block: "start" });
    } catch (error) {
      if (error instanceof ApiError) showError(error);
      else showFieldError("_form", String(error));
      revealFirstError();
    } finally {
      button.disabled = false;
      button.textContent = "Generate video";
    }
  }

  function initForm() {
    startImage = new ImageInput($("#image-field"), "image");
    endImage = new ImageInput($("#last-image-field"), "last_image");
    initRanges();
    $$("input[name=model]", form).forEach((radio) => radio.addEventListener("change", syncModel));
    $("#num_frames").addEventListener("input", syncDuration);
    $("#seed-random").addEventListener("click", () => {
      $("#seed").value = "-1";
      clearFieldError("seed");
    });
    form.addEventListener("input", (event) => {
      const name = event.target.name;
      if (name) {
        clearFieldError(name);
        event.target.removeAttribute("aria-invalid");
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      submit();
    });
    $("#reset-form").addEventListener("click", () => {
      form.reset();
      startImage.clear();
      endImage.clear();
      clearErrors();
      $("#advanced").open = false;
      syncModel();
      syncRanges();
    });
    syncModel();
    syncDuration();
  }

  // ---------------------------------------------------------------- progress and result

  let current = null; // {id, timer, data, since}

  function showPanel(name) {
    output.dataset.status = name;
    $("#idle").hidden = name !== "idle";
    $("#progress").hidden = name !== "progress";
    $("#result").hidden = name !== "result";
    if (name !== "result") $("#result-video").pause();
  }

  function stopTracking() {
    if (current && current.timer) clearTimeout(current.timer);
    current = null;
    sessionStorage.removeItem(CURRENT_JOB);
  }

  function track(data) {
    stopTracking();
    current = { id: data.id, timer: null, data, since: Date.now(), previewPath: null };
    sessionStorage.setItem(CURRENT_JOB, data.id);
    $("#preview-figure").hidden = true;
    $("#cancel").disabled = false;
    $("#cancel").textContent = "Cancel";
    render(data);
    if (!TERMINAL.includes(data.status)) schedulePoll(0);
    markSelected(data.id);
  }

  function schedulePoll(delay = POLL_MS) {
    const job = current;
    job.timer = setTimeout(async () => {
      if (current !== job) return;
      try {
        const payload = await api(`api/v3/predictions/${encodeURIComponent(job.id)}/result`);
        if (current !== job) return;
        job.data = payload.data;
        render(payload.data);
        updateCard(payload.data);
        if (TERMINAL.includes(payload.data.status)) {
          sessionStorage.removeItem(CURRENT_JOB);
          loadHistory();
          return;
        }
      } catch (error) {
        if (current !== job) return;
        if (error.status === 404) {
          $("#progress-text").textContent = "This job is not known to the server (or belongs to another key).";
          stopTracking();
          return;
        }
        $("#progress-meta").textContent =
          error.status === 0 ? "Connection lost; retrying…" : `Polling failed: ${error.message}; retrying…`;
      }
      schedulePoll(POLL_MS);
    }, delay);
  }

  function progressFraction(p) {
    if (!p) return 0;
    const steps = Math.max(1, p.steps);
    switch (p.phase) {
      case "encoding":
        return 0.02;
      case "sampling":
        return 0.02 + (0.86 * (Math.max(0, p.section - 1) * steps + p.step)) / (Math.max(1, p.sections) * steps);
      case "decoding":
        return 0.88 + (0.11 * p.step) / steps;
      default:
        return 0.99;
    }
  }

  function describeProgress(data) {
    const p = data.progress;
    if (data.status === "created") return ["Queued", "Waiting for the worker to pick this job up.", null];
    if (!p) return ["Starting", "Loading the model and reading the image…", null];
    switch (p.phase) {
      case "encoding":
        return ["Encoding", "Encoding the image and the prompt…", null];
      case "sampling":
        return ["Sampling", `Section ${p.section} of ${p.sections} · step ${p.step} of ${p.steps}`, p.eta_seconds];
      case "decoding":
        return ["Decoding", `Decoding the video · window ${p.step} of ${p.steps}`, null];
      case "done":
        return ["Writing", "Writing the video file…", null];
      default:
        return [p.phase, `Section ${p.section} of ${p.sections} · step ${p.step} of ${p.steps}`, p.eta_seconds];
    }
  }

  function render(data) {
    if (TERMINAL.includes(data.status)) {
      renderResult(data);
      return;
    }
    showPanel("progress");
    output.dataset.status = data.status;
    const [phase, text, eta] = describeProgress(data);
    $("#job-status").textContent = data.status === "created" ? "queued" : "running";
    $("#job-status").dataset.status = data.status;
    $("#progress-phase").textContent = phase;
    $("#progress-text").textContent = text;
    $("#progress-eta").textContent = eta === null || eta === undefined ? "" : `about ${formatSeconds(eta)} left`;
    const percent = Math.round(progressFraction(data.progress) * 100);
    $("#progress-fill").style.width = `${percent}%`;
    $("#progress-bar").setAttribute("aria-valuenow", String(percent));
    const elapsed = (Date.now() - current.since) / 1000;
    const input = data.input || {};
    $("#progress-meta").textContent = [
      MODEL_NAMES[data.model] || data.model,
      input.resolution && `${input.resolution} ${input.aspect_ratio || ""}`.trim(),
      input.num_frames && `${input.num_frames} frames`,
      data.seed !== null && data.seed !== undefined && `seed ${data.seed}`,
      `elapsed ${formatSeconds(elapsed)}`,
    ]
      .filter(Boolean)
      .join(" · ");
    const preview = data.progress && data.progress.preview;
    if (preview) loadPreview(preview);
  }

  function loadPreview(url) {
    // The preview file is rewritten in place; each poll signs a fresh URL for it. Swap when loaded.
    const img = new Image();
    img.onload = () => {
      $("#preview").src = url;
      $("#preview-figure").hidden = false;
    };
    img.src = url;
  }

  function renderResult(data) {
    showPanel("result");
    output.dataset.status = data.status;
    const video = $("#result-video");
    const errorBox = $("#result-error");
    const url = data.status === "completed" && data.outputs.length ? data.outputs[0] : "";
    const isUrl = /^https?:/.test(url);
    if (isUrl) {
      if (video.dataset.job !== data.id) {
        video.src = url;
        video.dataset.job = data.id;
      }
      video.hidden = false;
      $("#download").href = url;
      $("#download").setAttribute("download", `framepack-${data.id}.mp4`);
      $("#download").hidden = false;
    } else {
      video.removeAttribute("src");
      video.dataset.job = "";
      video.load();
      video.hidden = true;
      $("#download").hidden = true;
    }
    $(".video-wrap", output).hidden = !isUrl;
    errorBox.hidden = data.status === "completed";
    if (data.status === "failed") errorBox.textContent = `The job failed: ${data.error || "no reason given"}`;
    else if (data.status === "cancelled") errorBox.textContent = "Cancelled. Nothing was written.";
    else errorBox.textContent = "";
    const input = data.input || {};
    const facts = [
      ["Status", data.status],
      ["Model", MODEL_NAMES[data.model] || data.model],
      ["Seed", data.seed ?? input.seed],
      ["Inference", data.timings && data.timings.inference ? formatMs(data.timings.inference) : null],
      ["Total", data.executionTime ? formatMs(data.executionTime) : null],
      ["Video", [input.resolution, input.aspect_ratio, input.num_frames && `${input.num_frames} frames`].filter(Boolean).join(" · ")],
      ["Steps", input.num_inference_steps],
      ["Guidance", input.guidance_scale],
      ["Prompt", input.prompt],
    ];
    if (data.has_nsfw_contents && data.has_nsfw_contents.some(Boolean)) facts.push(["Safety", "flagged by the safety checker"]);
    const dl = $("#facts");
    dl.replaceChildren();
    for (const [name, value] of facts) {
      if (value === null || value === undefined || value === "") continue;
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = String(value);
      dd.dataset.fact = name.toLowerCase();
      dl.append(dt, dd);
    }
    $("#again").disabled = !data.input;
    $("#edit").disabled = !data.input;
  }

  function initOutput() {
    $("#cancel").addEventListener("click", async () => {
      if (!current) return;
      const button = $("#cancel");
      button.disabled = true;
      button.textContent = "Cancelling…";
      try {
        const payload = await api(`api/v3/predictions/${encodeURIComponent(current.id)}/cancel`, { method: "POST" });
        if (current && payload.data.id === current.id) {
          current.data = payload.data;
          if (TERMINAL.includes(payload.data.status)) render(payload.data);
        }
      } catch (error) {
        button.disabled = false;
        button.textContent = "Cancel";
        $("#progress-meta").textContent = `Cancel failed: ${error.message}`;
      }
    });
    $("#again").addEventListener("click", () => {
      if (!current || !current.data.input) return;
      fillForm(current.data.input, current.data.model);
      $("#seed").value = "-1";
      submit();
    });
    $("#edit").addEventListener("click", () => {
      if (!current || !current.data.input) return;
      fillForm(current.data.input, current.data.model);
      form.scrollIntoView({ behavior: scrollBehavior(), block: "start" });
      $("#prompt").focus({ preventScroll: true });
    });
  }

  // ---------------------------------------------------------------- history

  let historyItems = [];
  let historyPage = 1;

  async function loadHistory({ more = false } = {}) {
    const page = more ? historyPage + 1 : 1;
    $("#history-error").textContent = "";
    try {
      const payload = await api(`api/v3/predictions?page=${page}&page_size=${HISTORY_PAGE_SIZE}`);
      historyPage = page;
      const items = payload.data.items;
      historyItems = more ? historyItems.concat(items) : items;
      renderHistory(payload.data.total);
      return true;
    } catch (error) {
      if (error.status !== 0 && error.status !== 401) {
        $("#history-error").textContent = `Could not load the history: ${error.message}`;
      }
      if (!more) {
        historyItems = [];
        renderHistory(0);
        if (error.status === 401) $("#history-empty").textContent = "Your videos appear here once the API key is accepted.";
      }
      return false;
    }
  }

  function renderHistory(total) {
    const list = $("#history-list");
    list.replaceChildren(...historyItems.map(historyCard));
    $("#history-empty").hidden = historyItems.length > 0;
    $("#history-empty").textContent = "No videos yet for this key.";
    $("#history-more").hidden = historyItems.length >= total;
    if (current) markSelected(current.id);
  }

  function historyCard(item) {
    const input = item.input || {};
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "card";
    button.dataset.id = item.id;
    button.dataset.status = item.status;
    const thumb = document.createElement("div");
    thumb.className = "thumb";
    const video = item.status === "completed" && /^https?:/.test(item.outputs[0] || "") ? item.outputs[0] : "";
    if (video) {
      const v = document.createElement("video");
      v.muted = true;
      v.preload = "metadata";
      v.playsInline = true;
      v.src = `${video}#t=0.1`;
      thumb.append(v);
    } else if (input.image && /^https?:/.test(input.image)) {
      const img = document.createElement("img");
      img.loading = "lazy";
      img.alt = "";
      img.src = input.image;
      thumb.append(img);
    }
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.dataset.status = item.status;
    badge.textContent = item.status === "created" ? "queued" : item.status;
    thumb.append(badge);
    const prompt = document.createElement("p");
    prompt.className = "card-prompt";
    prompt.textContent = input.prompt || "(no prompt)";
    const meta = document.createElement("p");
    meta.className = "card-meta";
    meta.textContent = [
      MODEL_NAMES[item.model] || item.model,
      [input.resolution, input.aspect_ratio].filter(Boolean).join(" "),
      input.num_frames && `${input.num_frames} fr`,
      input.num_inference_steps && `${input.num_inference_steps} steps`,
      item.seed !== null && item.seed !== undefined && `seed ${item.seed}`,
    ]
      .filter(Boolean)
      .join(" · ");
    const when = document.createElement("p");
    when.className = "card-when";
    when.textContent = formatWhen(item.created_at);
    button.append(thumb, prompt, meta, when);
    button.addEventListener("click", () => {
      track(item);
      output.scrollIntoView({ behavior: scrollBehavior(), block: "nearest" });
    });
    li.append(button);
    return li;
  }

  function updateCard(data) {
    // The polled job's card follows its status between history reloads.
    const card = $(`.card[data-id="${CSS.escape(data.id)}"]`, $("#history-list"));
    if (!card || card.dataset.status === data.status) return;
    card.dataset.status = data.status;
    const badge = $(".badge", card);
    badge.dataset.status = data.status;
    badge.textContent = data.status === "created" ? "queued" : data.status;
  }

  function markSelected(id) {
    $$(".card", $("#history-list")).forEach((card) => card.classList.toggle("selected", card.dataset.id === id));
  }

  function initHistory() {
    $("#history-refresh").addEventListener("click", () => loadHistory());
    $("#history-more").addEventListener("click", () => loadHistory({ more: true }));
  }

  // ---------------------------------------------------------------- formatting

  function formatSeconds(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const r = s % 60;
    if (h) return `${h} h ${String(m).padStart(2, "0")} min`;
    if (m) return `${m} min ${String(r).padStart(2, "0")} s`;
    return `${r} s`;
  }

  function formatMs(ms) {
    return ms < 60000 ? `${(ms / 1000).toFixed(1)} s` : formatSeconds(ms / 1000);
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} kB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }

  function formatWhen(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    const seconds = (Date.now() - date.getTime()) / 1000;
    if (seconds < 60) return "just now";
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return date.toLocaleString();
  }

  // ---------------------------------------------------------------- start

  async function start() {
    initKey();
    initForm();
    initOutput();
    initHistory();
    showPanel("idle");
    try {
      const response = await fetch("health", { cache: "no-store" });
      const health = await response.json();
      $("#server-info").textContent = `framepack-server ${health.version}`;
    } catch {
      showBanner(`Cannot reach the server at ${location.origin}. Is \`framepack serve\` running?`);
      return;
    }
    const ok = await loadHistory();
    if (ok) setKeyState(apiKey() ? "Key accepted." : "This server runs without keys (--no-auth).", "ok");
    const resume = sessionStorage.getItem(CURRENT_JOB);
    if (ok && resume) {
      try {
        const payload = await api(`api/v3/predictions/${encodeURIComponent(resume)}/result`);
        track(payload.data);
      } catch {
        sessionStorage.removeItem(CURRENT_JOB);
      }
    }
  }

  window.framepack = { api }; // for the console
  start();
})();
