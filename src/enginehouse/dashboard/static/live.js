// Live status: a page marked data-live polls that JSON every two seconds and rewrites each status
// (and its reason) in place, so Pending → Deploying → Deployed shows without a reload. On an
// engine's page, when its set of deployments or replicas changes (one added, removed, replaced),
// its rows are fetched again as the server renders them and swapped in.
(function () {
  "use strict";
  // A part of the page the server renders whole (a job's progress, an experiment's versions):
  // replaced when what the server renders changes.
  const part = document.querySelector("[data-live-html]");
  if (part) {
    const source = part.getAttribute("data-live-html");
    const refresh = async () => {
      try {
        const answer = await fetch(source, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (answer.status === 401) { window.location.reload(); return; }
        if (answer.ok) {
          const body = await answer.json();
          if (body.html !== part.dataset.rendered) {
            part.innerHTML = body.html;
            part.dataset.rendered = body.html;
          }
        }
      } catch (error) {
        // Try again on the next tick.
      }
      window.setTimeout(refresh, 2000);
    };
    window.setTimeout(refresh, 2000);
  }
  const holder = document.querySelector("[data-live]");
  if (!holder) return;
  const url = holder.getAttribute("data-live");
  let shown = statusIds();

  function statusIds() {
    return new Set(Array.from(document.querySelectorAll("[data-status-of]"), (el) => el.dataset.statusOf));
  }

  function show(id, status, reason) {
    const el = document.querySelector(`[data-status-of="${CSS.escape(id)}"]`);
    if (!el) return;
    if (el.textContent !== status) {
      el.textContent = status;
      el.dataset.status = status;
    }
    const why = document.querySelector(`[data-reason-of="${CSS.escape(id)}"]`);
    if (why && reason !== undefined) why.textContent = reason || "";
  }

  function sameRows(engine) {
    const rows = [...engine.deployments, ...engine.replicas].map((x) => x.id);
    const before = Array.from(shown).filter((id) => id !== engine.id);
    return rows.length === before.length && rows.every((id) => shown.has(id));
  }

  async function poll() {
    try {
      const answer = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (answer.status === 401) { window.location.reload(); return; }  // signed out: to the sign-in page
      if (answer.ok) await apply(await answer.json());
    } catch (error) {
      // The server restarting or the network dropping: try again on the next tick.
    }
    window.setTimeout(poll, 2000);
  }

  async function apply(body) {
    // The engines page polls a list ({data: [...]}), an engine's page the engine itself.
    const single = !body.data;
    for (const engine of body.data || [body]) {
      show(engine.id, engine.status, engine.status_reason);
      for (const part of [...engine.deployments, ...engine.replicas]) show(part.id, part.status, part.status_reason);
      const count = document.querySelector(`[data-replicas-of="${CSS.escape(engine.id)}"]`);
      if (count) count.textContent = String(engine.replicas.length);
      const parts = document.getElementById("engine-parts");
      if (single && parts && !sameRows(engine)) {
        const rows = await fetch(parts.dataset.parts, { credentials: "same-origin" });
        if (rows.ok) {
          parts.innerHTML = await rows.text();
          shown = statusIds();
        }
      }
    }
  }
  window.setTimeout(poll, 2000);
})();
