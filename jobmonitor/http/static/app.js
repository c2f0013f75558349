// The jobmonitor page: a live list of jobs, one job's live lines, the queues, a
// submit form.
// Plain DOM, no framework. Job text is only ever set as textContent, never as HTML.
// The list is polled (every PollAfter seconds, not while the tab is hidden); a job's
// lines come over one EventSource, which resumes after its last event by itself.
"use strict";

const API = "/api/v1";
const STATES = ["Created", "Queued", "Processing", "Completed", "CompletedWithErrors",
                "Failed", "Cancelled", "Suspended"];
const FINAL = new Set([3, 4, 5, 6]);
const $ = (id) => document.getElementById(id);

let pollTimer = null;
let pollSeconds = 2;
let events = null;       // the EventSource of the job on view
let shown = null;        // the transaction ID on view
let statusTimer = null;  // a status refresh waiting (at most a few a second)
let lastJobs = [];       // the list as last fetched (the filter works on it)

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function showProblem(text) {
  const box = $("problem");
  box.textContent = text || "";
  box.hidden = !text;
}

async function call(method, path, body) {
  const options = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, options);
  if (response.status === 204) return null;
  const data = await response.json();
  if (!response.ok) {
    throw new Error(`${data.code || response.status}: ${data.detail || data.title}`);
  }
  return data;
}

function percentOf(job) {
  const p = job.Progress || {};
  return p.Total ? Math.floor((100 * p.Done) / p.Total) : (FINAL.has(job.Status) ? 100 : 0);
}

function localTime(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "";
}

// -- the list ------------------------------------------------------------------------

function matches(job, words) {
  const text = [job.Id, job.Type, job.JobName, STATES[job.Status]].join(" ").toLowerCase();
  return words.every((word) => text.includes(word));
}

function renderJobs(jobs) {
  const words = $("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  const body = $("jobs").tBodies[0];
  const rows = [];
  for (const job of jobs.slice().reverse()) {
    if (!matches(job, words)) continue;
    const row = element("tr");
    row.dataset.id = job.Id;
    row.dataset.testid = "job-row";
    row.tabIndex = 0;
    const bar = element("progress");
    bar.max = 100;
    bar.value = percentOf(job);
    const cells = [element("td", job.Id, "id"), element("td", STATES[job.Status], "status " +
                   STATES[job.Status]), element("td", job.Type), element("td", job.JobName),
                   element("td"), element("td", localTime(job.Updated))];
    cells[4].append(bar);
    row.append(...cells);
    row.addEventListener("click", () => { location.hash = job.Id; });
    row.addEventListener("keydown", (e) => { if (e.key === "Enter") location.hash = job.Id; });
    rows.push(row);
  }
  body.replaceChildren(...rows);
  $("no-jobs").hidden = rows.length > 0;
}

// The jobs a page at a time, following Next (at most MAX_PAGES pages a refresh).
const MAX_PAGES = 10;
async function listJobs(which) {
  const jobs = [];
  let after = "";
  for (let pages = 0; pages < MAX_PAGES; pages++) {
    const page = await call("GET", `/jobs?filter=${which}${after ? "&after=" + after : ""}`);
    jobs.push(...page.Jobs);
    if (!page.Next) break;
    after = page.Next;
  }
  return jobs;
}

// -- the queues ----------------------------------------------------------------------

function renderQueues(queues) {
  $("queues").tBodies[0].replaceChildren(...queues.map((queue) => {
    const row = element("tr");
    row.dataset.queue = queue.Name;
    row.dataset.testid = "queue-row";
    const button = element("button", queue.Paused ? "Resume" : "Pause");
    button.type = "button";
    button.dataset.testid = queue.Paused ? "resume-queue" : "pause-queue";
    button.addEventListener("click", () => pauseQueue(queue.Name, !queue.Paused));
    const cells = [element("td", queue.Name), element("td", queue.Waiting),
                   element("td", queue.Running), element("td", queue.MaxRunning),
                   element("td", queue.Scheduled),
                   element("td", queue.Paused ? "Paused" : "", queue.Paused ? "status Paused" : ""),
                   element("td")];
    cells[6].append(button);
    row.append(...cells);
    return row;
  }));
}

async function pauseQueue(name, pause) {
  const what = pause ? "pause" : "resume";
  try {
    await call("POST", `/queues/${encodeURIComponent(name)}/${what}`);
    refreshList();
  } catch (error) {
    showProblem(`${what} queue ${name}: ${error.message}`);
  }
}

async function refreshList() {
  try {
    const [jobs, queue, queues] = await Promise.all([
      listJobs($("which").value), call("GET", "/queue"), call("GET", "/queues")]);
    lastJobs = jobs;
    renderJobs(jobs);
    renderQueues(queues);
    $("queue").textContent = `${queue.Running} running, ${queue.Queued} queued`;
    const changing = jobs.find((job) => job.PollAfter);  // (null once a job has ended)
    if (jobs.length) pollSeconds = Math.max(1, changing ? changing.PollAfter : 2);
    showProblem("");
  } catch (error) {
    showProblem(`Cannot list jobs: ${error.message}`);
  }
}

function schedulePoll() {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(async () => {
    if (!document.hidden) await refreshList();
    schedulePoll();
  }, pollSeconds * 1000);
}

// -- one job -------------------------------------------------------------------------

function setButtons(job) {
  const state = job ? job.Status : -1;
  $("cancel").disabled = ![0, 1, 2, 7].includes(state);
  $("suspend").disabled = ![1, 2].includes(state);
  $("resume").disabled = state !== 7;
  $("delete").disabled = !FINAL.has(state);
  $("rerun").disabled = !FINAL.has(state);
}

function setProgress(done, total, text) {
  const bar = $("job-progress");
  bar.max = total || 1;
  bar.value = total ? done : 0;
  $("job-progress-text").textContent = text;
}

function renderJob(job) {
  const row = document.querySelector(`#jobs tr[data-id="${job.Id}"]`);
  if (row) {  // the list follows the job on view between its polls
    row.cells[1].textContent = STATES[job.Status];
    row.cells[1].className = "status " + STATES[job.Status];
    row.querySelector("progress").value = percentOf(job);
  }
  const status = $("job-status");
  status.textContent = STATES[job.Status];
  status.className = "status " + STATES[job.Status];
  const p = job.Progress;
  setProgress(p.Done, p.Total, p.Total ? `${p.Done}/${p.Total} (${p.Percent}%) ${p.Message}`
                                       : (p.Message || ""));
  setButtons(job);
  const facts = [["Project", job.Type], ["Job name", job.JobName], ["Owner", job.Identity],
                 ["Queue", `${job.Queue}, priority ${job.Priority}`],
                 ["Created", job.Created], ["Started", job.Started],
                 ["Completed", job.Completed], ["Parameters", job.Parameters]];
  $("job-facts").replaceChildren(...facts.flatMap(([key, value]) =>
    [element("dt", key), element("dd", value || "")]));
  $("history").replaceChildren(...(job.History || []).map((e) =>
    element("li", `${localTime(e.Timestamp)} ${e.Stage} ${e.Status}${e.Info ? " (" + e.Info + ")" : ""}`)));
  $("outputs").replaceChildren(...job.JobData.map((o) =>
    element("li", `${o.Name}  ${o.Uri}${o.MediaType ? "  " + o.MediaType : ""}`)));
}

async function refreshJob() {
  statusTimer = null;
  const id = shown;
  if (!id) return;
  try {
    const job = await call("GET", `/jobs/${id}?history=true`);
    if (id === shown) renderJob(job);
  } catch (error) {
    showProblem(`${id}: ${error.message}`);
  }
}

function soonRefreshJob() {
  if (statusTimer === null) statusTimer = setTimeout(refreshJob, 300);
}

function addLine(number, text) {
  const list = $("lines");
  const item = element("li", text);
  item.value = number;
  item.dataset.n = number;
  const code = Number(text.slice(1, 8));
  if (code >= 5000) item.classList.add("error");
  list.append(item);
  const progress = /^J0000110[:-] Progress: (\d+)\/(\d+)/.exec(text);
  if (progress) setProgress(Number(progress[1]), Number(progress[2]), text.slice(10));
  if ($("follow").checked) list.scrollTop = list.scrollHeight;
}

function follow(id) {
  if (events) events.close();
  // A fresh view starts at line 1; the EventSource itself resumes after its last
  // event (Last-Event-ID) if the connection drops, so each line comes once.
  events = new EventSource(`${API}/jobs/${id}/events?from=1`);
  events.addEventListener("line", (event) => {
    addLine(Number(event.lastEventId), event.data);
    soonRefreshJob();
  });
  events.addEventListener("end", () => {
    events.close();
    events = null;
    refreshJob();
    refreshList();
  });
  events.addEventListener("error", () => {
    if (events && events.readyState === EventSource.CLOSED) refreshJob();
  });
}

function showJob(id) {
  shown = id;
  $("job").hidden = !id;
  if (events) { events.close(); events = null; }
  if (!id) return;
  $("job-title").textContent = id;
  $("lines").replaceChildren();
  setButtons(null);
  refreshJob();
  follow(id);
}

async function act(what) {
  const id = shown;
  try {
    if (what === "delete") {
      await call("DELETE", `/jobs/${id}`);
      location.hash = "";
    } else if (what === "rerun") {
      location.hash = (await call("POST", `/jobs/${id}/rerun`)).Id;
    } else {
      renderJob(await call("POST", `/jobs/${id}/${what}`));
      soonRefreshJob();
    }
    refreshList();
  } catch (error) {
    showProblem(`${what} ${id}: ${error.message}`);
  }
}

// -- submitting ----------------------------------------------------------------------

async function loadProjects() {
  try {
    const names = await call("GET", "/projects");
    $("project").replaceChildren(...names.map((name) => {
      const option = element("option", name);
      option.value = name;
      return option;
    }));
  } catch (error) {
    showProblem(`Cannot list projects: ${error.message}`);
  }
}

function parseParameters(text) {
  const parameters = {};
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`not name=value: ${line}`);
    parameters[line.slice(0, at).trim()] = line.slice(at + 1);
  }
  return parameters;
}

async function submitJob(event) {
  event.preventDefault();
  try {
    const body = { ProjectName: $("project").value, Parameters: parseParameters($("parameters").value) };
    if ($("job-name").value) body.JobName = $("job-name").value;
    if ($("queue-name").value.trim()) body.Queue = $("queue-name").value.trim();
    if ($("priority").value) body.Priority = Number($("priority").value);
    const job = await call("POST", "/jobs", body);
    showProblem("");
    location.hash = job.Id;
    refreshList();
  } catch (error) {
    showProblem(`Submit: ${error.message}`);
  }
}

// -- start ---------------------------------------------------------------------------

function route() {
  const id = decodeURIComponent(location.hash.slice(1));
  showJob(/^T\d{7}$/.test(id) ? id : null);
}

document.addEventListener("DOMContentLoaded", () => {
  $("filter").addEventListener("input", () => renderJobs(lastJobs));
  $("which").addEventListener("change", refreshList);
  $("submit").addEventListener("submit", submitJob);
  for (const what of ["cancel", "suspend", "resume", "delete", "rerun"]) {
    $(what).addEventListener("click", () => act(what));
  }
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshList(); });
  window.addEventListener("hashchange", route);
  loadProjects();
  refreshList();
  schedulePoll();
  route();
});
