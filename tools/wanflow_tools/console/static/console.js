// wanflow console: one page over the public HTTP API (docs/console.md). No build step, no framework.
// Everything shown comes from the API; user data is put into the page as text, never as HTML.
"use strict";

(() => {
  // The page's address may set how often the open view asks the API again and how many jobs a page shows:
  // /?poll_ms=1000&page_size=50
  const options = new URLSearchParams(location.search);
  const POLL_MS = Math.max(250, Number(options.get("poll_ms")) || 2000);
  const PAGE_SIZE = Math.min(100, Math.max(1, Number(options.get("page_size")) || 20));
  const ENDED = new Set(["SUCCEEDED", "FAILED", "CANCELED"]);
  const IMAGE_TYPES = ["image/jpeg", "image/png", "image/bmp", "image/webp"];
  const IMAGE_TYPE_MESSAGE = "The image must be a JPEG, PNG, BMP or WEBP file.";
  // API error fields (docs/openapi.yaml) -> the form control that holds them.
  const FIELD_CONTROLS = {
    "input.img_url": "image",
    content_type: "image",
    "input.prompt": "prompt",
    "input.negative_prompt": "negative-prompt",
    model: "model",
    "parameters.resolution": "resolution",
    "parameters.duration": "duration",
    "parameters.audio": "audio",
    "parameters.shot_type": "shot-type",
    "parameters.seed": "seed",
    "parameters.prompt_extend": "prompt-extend",
    priority: "priority",
  };

  const $ = (id) => document.getElementById(id);
  const state = {
    timer: null,
    route: null,
    list: { status: "", cursors: [null], page: 0, statuses: new Map() },
    job: { id: null, videoUrl: null, frameUrl: null, status: null, canceling: false, cancelRefused: false },
    models: null,
    form: { idempotencyKey: null, upload: null },
  };

  // ---- the API ----------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.code = (body && body.code) || null;
      this.errors = (body && Array.isArray(body.errors) && body.errors) || [];
    }
  }

  const API_TIMEOUT_MS = 20000;

  async function api(method, path, body, headers = {}) {
    // The signing proxy of `wanflow console` forwards only requests that carry this header (docs/console.md).
    const init = { method, headers: { Accept: "application/json", "X-Wanflow-Console": "1", ...headers } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    init.signal = AbortSignal.timeout(API_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      const why = error && error.name === "TimeoutError" ? `no answer within ${API_TIMEOUT_MS / 1000} s` : "unreachable";
      throw new Error(`the API at ${location.origin} is ${why}`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = { message: text.slice(0, 300) };
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  // ---- small helpers ----------------------------------------------------------------------------------------

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function timeEl(iso) {
    if (!iso) return el("span", { text: "–" });
    const moment = new Date(iso);
    return el("time", { datetime: iso, title: iso, text: moment.toLocaleString() });
  }

  // Up to four decimals, as the price list has them ($0.0375/s, $0.1875), never fewer than two ($0.50).
  function money(usd) {
    return typeof usd === "number" ? `$${usd.toFixed(4).replace(/0{1,2}$/, "")}` : "–";
  }

  function seconds(total) {
    if (typeof total !== "number") return "";
    if (total < 90) return `${Math.round(total)} s`;
    return `${Math.round(total / 60)} min`;
  }

  function statusBadge(status) {
    return el("span", { class: `status ${status}`, text: status });
  }

  function queueText(queue) {
    if (!queue) return "–";
    const wait = queue.reason === "budget" ? "waiting for the spend cap" : `about ${seconds(queue.eta_seconds)}`;
    return `#${queue.position} (${wait})`;
  }

  function announce(message) {
    $("announcer").textContent = message;
  }

  function showBanner(message) {
    const banner = $("banner");
    banner.textContent = message;
    banner.hidden = !message;
  }

  function stopPolling() {
    if (state.timer !== null) clearTimeout(state.timer);
    state.timer = null;
  }

  function pollAgain(step) {
    stopPolling();
    state.timer = setTimeout(async () => {
      state.timer = null;
      if (document.hidden) return pollAgain(step); // no requests from a tab nobody looks at
      await step();
    }, POLL_MS);
  }

  // ---- routing ----------------------------------------------------------------------------------------------

  function parseRoute() {
    const hash = location.hash.replace(/^#/, "") || "/jobs";
    const job = hash.match(/^\/jobs\/([0-9a-f]{32})$/);
    if (job) return { view: "job", jobId: job[1] };
    if (hash === "/new") return { view: "new" };
    return { view: "jobs" };
  }

  async function route() {
    stopPolling();
    showBanner("");
    const next = parseRoute();
    // Focus moves to a new view's heading when the user went there, not on the first load: a fresh page starts
    // at the top, where the skip link is.
    const changedView = state.route !== null && (state.route.view !== next.view || state.route.jobId !== next.jobId);
    state.route = next;
    for (const view of ["jobs", "job", "new"]) $(`view-${view}`).hidden = view !== next.view;
    for (const link of document.querySelectorAll("[data-nav]")) {
      if (link.dataset.nav === next.view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    if (next.view === "jobs") await showJobs();
    else if (next.view === "job") await showJob(next.jobId);
    else await showNewJob();
    if (changedView) {
      // Keyboard and screen reader users land on the new view's heading.
      const heading = document.querySelector(`#view-${next.view} h1`);
      if (heading) heading.focus({ preventScroll: true });
    }
  }

  // ---- the jobs list ----------------------------------------------------------------------------------------

  async function showJobs() {
    const list = state.list;
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (list.status) params.set("status", list.status);
    const cursor = list.cursors[list.page];
    if (cursor) params.set("cursor", cursor);
    try {
      const page = await api("GET", `/v1/jobs?${params}`);
      if (state.route.view !== "jobs") return;
      renderJobs(page.jobs || []);
      list.cursors[list.page + 1] = page.next_cursor || null;
      $("page-older").disabled = !page.next_cursor;
      $("page-newer").disabled = list.page === 0;
      $("page-label").textContent = `Page ${list.page + 1}`;
      showBanner("");
    } catch (error) {
      showBanner(`Could not load the jobs: ${error.message}`);
    }
    pollAgain(showJobs);
  }

  function jobRow(job) {
    const cell = (label, ...content) => el("td", { "data-label": label }, ...content);
    return el(
      "tr",
      { "data-job-id": job.job_id, "data-status": job.status },
      cell("Job", el("a", { class: "job-link", href: `#/jobs/${job.job_id}`, text: job.job_id.slice(0, 12) })),
      cell("Status", statusBadge(job.status)),
      cell("Model", job.model),
      cell("Queue", queueText(job.queue)),
      el("td", { "data-label": "Cost", class: "num" }, money(job.cost_estimate_usd)),
      cell("Created", timeEl(job.created_at)),
      cell("Finished", timeEl(job.finished_at)),
    );
  }

  function renderJobs(jobs) {
    const body = $("jobs-body");
    const seen = state.list.statuses;
    const rows = jobs.map((job) => {
      const before = seen.get(job.job_id);
      if (before && before !== job.status) announce(`Job ${job.job_id.slice(0, 12)} is now ${job.status}`);
      seen.set(job.job_id, job.status);
      return jobRow(job);
    });
    // Only rows that changed are replaced, and rows are moved only when the order changed: a row taken out of the
    // page loses the keyboard focus, and the list refreshes every few seconds.
    const existing = new Map([...body.children].map((row) => [row.dataset.jobId, row]));
    const wanted = rows.map((row) => {
      const old = existing.get(row.dataset.jobId);
      return old && old.isEqualNode(row) ? old : row;
    });
    wanted.forEach((row, index) => {
      const current = body.children[index];
      if (current === row) return;
      const old = existing.get(row.dataset.jobId);
      if (old && old !== row && old.parentNode === body) old.replaceWith(row);
      if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
    });
    const keep = new Set(wanted);
    for (const row of [...body.children]) if (!keep.has(row)) row.remove();
    const empty = $("jobs-empty");
    empty.hidden = jobs.length > 0 || state.list.page > 0;
    empty.replaceChildren(
      ...(state.list.status
        ? [`No ${state.list.status} jobs.`]
        : ["No jobs yet. ", el("a", { href: "#/new", text: "Make your first video." })]),
    );
  }

  function bindJobsControls() {
    $("status-filter").addEventListener("change", (event) => {
      state.list.status = event.target.value;
      state.list.cursors = [null];
      state.list.page = 0;
      showJobs();
    });
    $("jobs-filter").addEventListener("submit", (event) => event.preventDefault());
    $("page-older").addEventListener("click", () => {
      if (!state.list.cursors[state.list.page + 1]) return;
      state.list.page += 1;
      showJobs();
    });
    $("page-newer").addEventListener("click", () => {
      if (state.list.page === 0) return;
      state.list.page -= 1;
      showJobs();
    });
  }

  // ---- one job ----------------------------------------------------------------------------------------------

  async function showJob(jobId) {
    if (state.job.id !== jobId) {
      state.job = { id: jobId, videoUrl: null, frameUrl: null, status: null, canceling: false, cancelRefused: false };
      resetJobView(jobId);
    }
    try {
      const job = await api("GET", `/v1/jobs/${jobId}`);
      if (state.route.view !== "job" || state.route.jobId !== jobId) return;
      $("view-job").classList.remove("missing");
      showBanner("");
      renderJob(job);
      if (ENDED.has(job.status)) return; // nothing more will change
    } catch (error) {
      if (error.status === 404) {
        $("view-job").classList.add("missing");
        showBanner("No such job (or it is not yours).");
        return;
      }
      showBanner(`Could not load the job: ${error.message}`);
    }
    pollAgain(() => showJob(jobId));
  }

  function resetJobView(jobId) {
    $("view-job").classList.remove("missing");
    $("job-title").textContent = `Job ${jobId}`;
    $("job-status").replaceChildren();
    const video = $("job-video");
    video.removeAttribute("src");
    video.load();
    $("job-video-figure").hidden = true;
    $("job-frame-figure").hidden = true;
    $("job-frame").removeAttribute("src");
    for (const id of ["job-prompt", "job-params", "job-events", "job-error"]) $(id).replaceChildren();
    $("job-error").hidden = true;
    $("job-queue").hidden = true;
    $("job-cancel").hidden = true;
    $("job-download").hidden = true;
  }

  function firstFrameUrl(job) {
    const input = (job.request && job.request.input) || {};
    if (job.first_frame_url) return job.first_frame_url;
    if (typeof input.img_url === "string" && input.img_url.startsWith("https://")) return input.img_url;
    return null;
  }

  function renderJob(job) {
    const previous = state.job.status;
    state.job.status = job.status;
    if (previous && previous !== job.status) announce(`The job is now ${job.status}`);
    $("job-status").replaceChildren(statusBadge(job.status));

    // Hidden once the job has ended, or once the API said it cannot be canceled (DashScope is working on it).
    const cancel = $("job-cancel");
    cancel.hidden = ENDED.has(job.status) || state.job.cancelRefused;
    cancel.disabled = state.job.canceling;

    const queue = $("job-queue");
    queue.hidden = !job.queue;
    if (job.queue) {
      const waitsFor =
        job.queue.reason === "budget"
          ? "it waits for room under the daily spend cap"
          : `it should start in about ${seconds(job.queue.eta_seconds)}`;
      queue.textContent = `Queued: position ${job.queue.position} (${job.queue.ahead} ahead); ${waitsFor}.`;
    }

    const errorBox = $("job-error");
    errorBox.hidden = !job.error;
    if (job.error) {
      errorBox.replaceChildren(
        el("strong", { text: job.error.code || "Error" }),
        `: ${job.error.message || ""}`,
        job.error.provider_request_id ? el("div", { class: "hint", text: `DashScope request ${job.error.provider_request_id}` }) : null,
      );
    }

    // The video: its presigned URL changes on every GET, so the element keeps the first one it got and keeps
    // playing through later refreshes.
    const output = job.output;
    if (output && output.url && !state.job.videoUrl) {
      state.job.videoUrl = output.url;
      $("job-video").src = output.url;
      $("job-video-figure").hidden = false;
      const download = $("job-download");
      download.href = output.url;
      download.setAttribute("download", `${job.job_id}.mp4`);
      download.hidden = false;
    }
    const frame = firstFrameUrl(job);
    if (frame && !state.job.frameUrl) {
      state.job.frameUrl = frame;
      $("job-frame").src = frame;
      $("job-frame-figure").hidden = false;
    }

    const request = job.request || {};
    const input = request.input || {};
    const parameters = request.parameters || {};
    const provider = job.provider || {};
    $("job-prompt").replaceChildren(
      ...pairs([
        ["Prompt", input.prompt || "(none)"],
        ["Negative prompt", input.negative_prompt],
        ["Actual prompt", provider.actual_prompt || (ENDED.has(job.status) ? "(none)" : "(once DashScope has it)")],
      ]),
    );
    $("job-params").replaceChildren(
      ...pairs([
        ["Model", job.model],
        ["Resolution", parameters.resolution],
        ["Duration", parameters.duration !== undefined ? `${parameters.duration} s` : undefined],
        ["Soundtrack", parameters.audio === undefined ? undefined : parameters.audio ? "yes" : "no"],
        ["Shot type", parameters.shot_type],
        ["Prompt extend", parameters.prompt_extend === undefined ? undefined : String(parameters.prompt_extend)],
        ["Seed", parameters.seed],
        ["Priority", job.priority],
        ["Source", job.source],
        ["Task id", provider.task_id || "(not created yet)"],
        ["Region", provider.region],
        ["Cost estimate", money(job.cost_estimate_usd)],
        ["Video", output ? `${Math.round(output.bytes / 1024)} KiB, SHA-256 ${output.sha256.slice(0, 16)}…` : undefined],
        ["Batch", job.batch_id],
      ]),
    );
    $("job-events").replaceChildren(...jobEvents(job).map(([at, text]) => el("li", {}, timeEl(at), ` ${text}`)));
  }

  function pairs(entries) {
    const nodes = [];
    for (const [label, value] of entries) {
      if (value === undefined || value === null || value === "") continue;
      nodes.push(el("dt", { text: label }), el("dd", { text: String(value) }));
    }
    return nodes;
  }

  function jobEvents(job) {
    const events = [[job.created_at, `Created (${job.source === "s3" ? "S3 upload" : "API"})`]];
    if (job.queued_at) events.push([job.queued_at, "Queued for a running slot"]);
    for (const attempt of job.attempts || []) {
      events.push([attempt.started, `DashScope accepted task ${attempt.task_id}`]);
      if (attempt.ended) {
        const why = attempt.code ? ` (${attempt.code}: ${attempt.message || ""})` : "";
        events.push([attempt.ended, `Task ${attempt.status}${why}`]);
      }
    }
    if (job.finished_at) events.push([job.finished_at, `Job ${job.status}${job.error ? ` (${job.error.code})` : ""}`]);
    for (const delivery of (job.webhook && job.webhook.deliveries) || []) {
      const outcome = delivery.status_code ? `HTTP ${delivery.status_code}` : delivery.error || "no answer";
      events.push([delivery.at, `Webhook ${delivery.type}, attempt ${delivery.attempt}: ${outcome}`]);
    }
    return events.filter(([at]) => at).sort((a, b) => a[0].localeCompare(b[0]));
  }

  async function cancelJob() {
    const jobId = state.job.id;
    if (!jobId || !window.confirm("Cancel this job? It cannot be started again.")) return;
    const button = $("job-cancel");
    state.job.canceling = true;
    button.disabled = true;
    button.textContent = "Canceling…";
    try {
      const job = await api("POST", `/v1/jobs/${jobId}/cancel`);
      state.job.canceling = false;
      renderJob(job);
      announce("The job is canceled");
    } catch (error) {
      state.job.canceling = false;
      button.disabled = false;
      if (error.status === 409) {
        state.job.cancelRefused = true;
        button.hidden = true;
      }
      showBanner(`Could not cancel: ${error.message}`);
    } finally {
      button.textContent = "Cancel job";
    }
  }

  // ---- a new job --------------------------------------------------------------------------------------------

  async function showNewJob() {
    if (!state.models) {
      $("submit").disabled = true;
      try {
        state.models = await api("GET", "/v1/models");
      } catch (error) {
        showBanner(`Could not load the models (trying again): ${error.message}`);
        pollAgain(showNewJob);
        return;
      }
      showBanner("");
      $("submit").disabled = false;
      const select = $("model");
      const models = state.models.models || [];
      select.replaceChildren(...models.map((model) => el("option", { value: model.name, text: model.name })));
      const preferred = state.models.default_model;
      if (preferred && models.some((model) => model.name === preferred)) select.value = preferred;
      applyModel();
    }
    if (!state.form.idempotencyKey) state.form.idempotencyKey = crypto.randomUUID();
  }

  function currentModel() {
    const models = (state.models && state.models.models) || [];
    return models.find((model) => model.name === $("model").value) || null;
  }

  // A new model's default, unless the user picked a value the new model also offers.
  function fillSelect(select, values, fallback, label) {
    const picked = select.dataset.picked === "true" && values.map(String).includes(select.value);
    const keep = picked ? select.value : String(fallback);
    select.replaceChildren(...values.map((value) => el("option", { value: String(value), text: label(value) })));
    select.value = keep;
  }

  // The form offers only what the chosen model supports, from the capability table (GET /v1/models).
  function applyModel() {
    const model = currentModel();
    if (!model) return;
    fillSelect($("resolution"), model.resolutions, model.default_resolution, (value) => value);
    fillSelect($("duration"), model.durations, model.default_duration, (value) => `${value} s`);
    const audioField = $("audio-field");
    audioField.hidden = model.audio === "never";
    $("audio").disabled = model.audio !== "optional";
    $("audio").checked = model.audio !== "never";
    $("audio-hint").textContent =
      model.audio === "always" ? "This model always makes a soundtrack." : "Auto-dubbed sound; untick for a silent video.";
    $("shot-field").hidden = !model.shot_type;
    updatePromptCount();
    updatePrice();
  }

  function hasAudio(model) {
    return model.audio === "always" || (model.audio === "optional" && $("audio").checked);
  }

  function pricePerSecond(model, resolution, audio) {
    const prices = model.price_usd_per_second || {};
    const tier = prices[resolution];
    if (!tier) return null;
    const value = audio ? tier.audio : tier.silent;
    return typeof value === "number" ? value : null;
  }

  function updatePrice() {
    const model = currentModel();
    const target = $("price");
    if (!model) {
      target.textContent = "–";
      return;
    }
    const resolution = $("resolution").value;
    const duration = Number($("duration").value);
    const audio = hasAudio(model);
    const perSecond = pricePerSecond(model, resolution, audio);
    target.textContent =
      perSecond === null
        ? `no list price for ${resolution}${audio ? " with sound" : ""} (the job's cost estimate stays empty)`
        : `${money(Math.round(perSecond * duration * 10000) / 10000)} (${duration} s at ${resolution}` +
          `${audio ? " with sound" : ", silent"}, ${money(perSecond)}/s list price)`;
  }

  function clearFieldErrors() {
    for (const node of document.querySelectorAll("#new-job .field-error")) {
      node.textContent = "";
      node.hidden = true;
    }
    for (const node of document.querySelectorAll("#new-job [aria-invalid]")) node.removeAttribute("aria-invalid");
    $("form-error").hidden = true;
    $("form-error").replaceChildren();
  }

  function clearFieldError(control) {
    if (!control || !control.id) return;
    const target = $(`${control.id}-error`);
    if (target) {
      target.textContent = "";
      target.hidden = true;
    }
    control.removeAttribute("aria-invalid");
  }

  function updatePromptCount() {
    const model = currentModel();
    const length = $("prompt").value.length;
    const most = model ? model.prompt_max_chars : null;
    $("prompt-hint").textContent = most === null ? "" : `${length} of at most ${most} characters.`;
  }

  // Puts each error next to the control of the field it names; the rest go to the box at the top of the form.
  function showFieldErrors(errors, fallback) {
    const unplaced = [];
    let first = null;
    for (const error of errors) {
      const control = FIELD_CONTROLS[error.field] ? $(FIELD_CONTROLS[error.field]) : null;
      if (!control) {
        unplaced.push(error.field ? `${error.field}: ${error.message}` : error.message);
        continue;
      }
      const target = $(`${control.id}-error`);
      target.textContent = target.hidden ? error.message : `${target.textContent} ${error.message}`;
      target.hidden = false;
      control.setAttribute("aria-invalid", "true");
      const details = control.closest("details");
      if (details) details.open = true;
      first = first || control;
    }
    if (!errors.length && fallback) unplaced.push(fallback);
    if (unplaced.length) {
      const box = $("form-error");
      box.replaceChildren(...unplaced.map((text) => el("p", { text })));
      box.hidden = false;
      first = first || box;
    }
    if (first) {
      if (first === $("form-error")) first.setAttribute("tabindex", "-1");
      first.focus();
    }
  }

  function pickedFile() {
    const files = $("image").files;
    return files && files.length ? files[0] : null;
  }

  function showPreview() {
    const file = pickedFile();
    clearFieldError($("image"));
    if (file && !IMAGE_TYPES.includes(file.type)) {
      showFieldErrors([{ field: "input.img_url", message: IMAGE_TYPE_MESSAGE }]);
    }
    const preview = $("image-preview");
    if (preview.src) URL.revokeObjectURL(preview.src);
    if (!file) {
      preview.hidden = true;
      preview.removeAttribute("src");
      return;
    }
    preview.src = URL.createObjectURL(file);
    preview.hidden = !IMAGE_TYPES.includes(file.type);
  }

  // The file goes straight to the intake bucket through the presigned POST the API hands out.
  async function uploadImage(file) {
    if (state.form.upload && state.form.upload.file === file) return state.form.upload.s3Uri;
    const upload = await api("POST", "/v1/uploads", { content_type: file.type });
    if (file.size > upload.max_bytes) {
      throw new ApiError(400, {
        message: "image too large",
        errors: [{ field: "input.img_url", message: `the file is ${file.size} bytes; at most ${upload.max_bytes}` }],
      });
    }
    const form = new FormData();
    for (const [name, value] of Object.entries(upload.fields)) form.append(name, value);
    form.append("file", file);
    const response = await fetch(upload.url, { method: "POST", body: form });
    if (!response.ok) {
      throw new ApiError(400, {
        message: "upload refused",
        errors: [{ field: "input.img_url", message: `the upload was refused (HTTP ${response.status})` }],
      });
    }
    state.form.upload = { file, s3Uri: upload.s3_uri };
    return upload.s3_uri;
  }

  function jobBody(s3Uri) {
    const model = currentModel();
    const input = { img_url: s3Uri };
    const prompt = $("prompt").value.trim();
    if (prompt) input.prompt = prompt;
    const negative = $("negative-prompt").value.trim();
    if (negative) input.negative_prompt = negative;
    const parameters = {
      resolution: $("resolution").value,
      duration: Number($("duration").value),
      prompt_extend: $("prompt-extend").checked,
    };
    if (model && model.audio === "optional") parameters.audio = $("audio").checked;
    if (model && model.shot_type) parameters.shot_type = $("shot-type").value;
    const seed = $("seed").value.trim();
    if (seed !== "") parameters.seed = Number(seed);
    return { model: $("model").value, input, parameters, priority: $("priority").value };
  }

  async function submitJob(event) {
    event.preventDefault();
    clearFieldErrors();
    const file = pickedFile();
    const problems = [];
    if (!file) problems.push({ field: "input.img_url", message: "Pick an image for the first frame." });
    else if (!IMAGE_TYPES.includes(file.type)) {
      problems.push({ field: "input.img_url", message: IMAGE_TYPE_MESSAGE });
    }
    const seed = $("seed").value.trim();
    const seedRange = (state.models && state.models.seed) || { min: 0, max: 2147483647 };
    if (seed !== "" && !(/^-?\d+$/.test(seed) && Number(seed) >= seedRange.min && Number(seed) <= seedRange.max)) {
      problems.push({
        field: "parameters.seed",
        message: `The seed is a whole number from ${seedRange.min} to ${seedRange.max}.`,
      });
    }
    if (problems.length) {
      showFieldErrors(problems);
      return;
    }
    const button = $("submit");
    const progress = $("submit-progress");
    button.disabled = true;
    try {
      progress.textContent = "Uploading the image…";
      const s3Uri = await uploadImage(file);
      progress.textContent = "Submitting the job…";
      // One key per filled-in form: a second click, or a retry after a lost answer, never makes a second job.
      const job = await api("POST", "/v1/jobs", jobBody(s3Uri), { "Idempotency-Key": state.form.idempotencyKey });
      progress.textContent = "";
      state.form = { idempotencyKey: crypto.randomUUID(), upload: null };
      $("new-job").reset();
      for (const id of ["resolution", "duration"]) delete $(id).dataset.picked;
      showPreview();
      applyModel();
      announce("The job is submitted");
      location.hash = `#/jobs/${job.job_id}`;
    } catch (error) {
      progress.textContent = "";
      if (error instanceof ApiError) showFieldErrors(error.errors, error.message);
      else showFieldErrors([], `Could not reach the API: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }

  function bindForm() {
    $("new-job").addEventListener("submit", submitJob);
    $("model").addEventListener("change", applyModel);
    for (const id of ["resolution", "duration", "audio"]) $(id).addEventListener("change", updatePrice);
    for (const id of ["resolution", "duration"]) {
      $(id).addEventListener("change", () => {
        $(id).dataset.picked = "true";
      });
    }
    // A fixed field loses its error at once; the prompt shows how much room is left.
    for (const type of ["input", "change"]) {
      $("new-job").addEventListener(type, (event) => {
        if (event.target !== $("image")) clearFieldError(event.target); // the image's own check is showPreview's
      });
    }
    $("prompt").addEventListener("input", updatePromptCount);
    $("image").addEventListener("change", showPreview);
    const zone = $("drop-zone");
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      const files = event.dataTransfer ? [...event.dataTransfer.files] : [];
      const image = files.find((file) => IMAGE_TYPES.includes(file.type));
      clearFieldError($("image"));
      if (!image) {
        if (files.length) showFieldErrors([{ field: "input.img_url", message: IMAGE_TYPE_MESSAGE }]);
        return;
      }
      const picked = new DataTransfer();
      picked.items.add(image);
      $("image").files = picked.files;
      showPreview();
    });
    for (const type of ["dragover", "drop"]) document.addEventListener(type, (event) => event.preventDefault());
  }

  // ---- start ------------------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    bindJobsControls();
    bindForm();
    $("job-cancel").addEventListener("click", cancelJob);
    $("job-video").addEventListener("loadedmetadata", (event) => {
      const video = event.target;
      $("job-video-caption").textContent =
        `Video: ${video.videoWidth}×${video.videoHeight}, ${video.duration.toFixed(1)} s`;
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && state.timer === null && state.route) route();
    });
    // The skip link moves focus to the content; as a plain #main link it would also change the route.
    document.querySelector(".skip-link").addEventListener("click", (event) => {
      event.preventDefault();
      $("main").focus();
    });
    window.addEventListener("hashchange", route);
    route();
  });
})();
