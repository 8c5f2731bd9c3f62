// "Try it" on a deployment's page: sends the form through /deployments/{id}/try (the gateway, on
// behalf of the signed-in organization) and shows the answer as fits the task type.
(function () {
  "use strict";
  const box = document.getElementById("try");
  if (!box) return;
  const answer = document.getElementById("try-answer");
  const kind = box.dataset.form;
  const value = (id) => document.getElementById(id).value;

  async function call(endpoint, body) {
    return fetch(`${box.dataset.try}?endpoint=${encodeURIComponent(endpoint)}`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": box.dataset.csrf },
      body: JSON.stringify(body),
    });
  }

  async function json(response) {
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    return body;
  }

  function paragraph(text, className) {
    const p = document.createElement("p");
    p.textContent = text;
    if (className) p.className = className;
    return p;
  }

  async function chat() {
    const out = paragraph("", "chat-answer");
    answer.replaceChildren(out);
    const response = await call("/v1/chat/completions", {
      messages: [{ role: "user", content: value("try-message") }],
      max_tokens: Number(value("try-max-tokens")) || 64,
      stream: true,
    });
    if (!response.ok) return json(response);
    // Server-sent events: "data: {chunk}" lines, then "data: [DONE]".
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { done, value: bytes } = await reader.read();
      if (done) break;
      pending += decoder.decode(bytes, { stream: true });
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const line of lines) {
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const chunk = JSON.parse(line.slice(6));
        if (chunk.error) throw new Error(chunk.error.message);
        for (const choice of chunk.choices || []) out.textContent += (choice.delta && choice.delta.content) || "";
      }
    }
    answer.append(paragraph("(end of answer)", "hint"));
  }

  async function classify() {
    const regression = box.dataset.regression === "true";
    const format = regression ? "logits" : "probs";
    const body = await json(await call("/v1/classification", { input: [value("try-text")], data_format: format }));
    const scores = Object.entries(body.data[0][format]).sort((a, b) => b[1] - a[1]);
    const table = document.createElement("table");
    table.className = "scores";
    for (const [label, score] of scores) {
      const row = table.insertRow();
      row.insertCell().textContent = label;
      row.insertCell().textContent = regression ? score.toFixed(4) : `${(100 * score).toFixed(1)} %`;
    }
    answer.replaceChildren(table);
  }

  async function ner() {
    const text = value("try-text");
    const body = await json(await call("/v1/ner", { input: text }));
    const out = document.createElement("p");
    out.className = "entities";
    let at = 0;
    for (const entity of body.data[0].entities) {
      out.append(text.slice(at, entity.start));
      const mark = document.createElement("mark");
      mark.textContent = text.slice(entity.start, entity.end);
      const tag = document.createElement("small");
      tag.textContent = ` ${entity.label}`;
      mark.append(tag);
      out.append(mark);
      at = entity.end;
    }
    out.append(text.slice(at));
    answer.replaceChildren(out, paragraph(`${body.data[0].entities.length} entities`, "hint"));
  }

  async function similarity() {
    const body = await json(await call("/v1/embeddings", { input: [value("try-first"), value("try-second")] }));
    const [a, b] = body.data.map((item) => item.embedding);
    let dot = 0, na = 0, nb = 0;
    for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
    const cosine = dot / Math.sqrt(na * nb);
    answer.replaceChildren(paragraph(`cosine similarity ${cosine.toFixed(4)} (${a.length} dimensions)`, "similarity"));
  }

  function imageDataUrl() {
    const file = document.getElementById("try-image").files[0];
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Error("could not read the image"));
      reader.readAsDataURL(file);
    });
  }

  async function detect() {
    const image = await imageDataUrl();
    const body = await json(await call("/v1/detections", { image }));
    const picture = new Image();
    await new Promise((resolve) => { picture.onload = resolve; picture.src = image; });
    const canvas = document.createElement("canvas");
    canvas.width = picture.naturalWidth;
    canvas.height = picture.naturalHeight;
    const pen = canvas.getContext("2d");
    pen.drawImage(picture, 0, 0);
    pen.lineWidth = Math.max(2, canvas.width / 200);
    pen.strokeStyle = "#f0b400";
    pen.fillStyle = "#f0b400";
    pen.font = `${Math.max(12, canvas.width / 40)}px sans-serif`;
    const list = document.createElement("ul");
    for (const d of body.data) {
      const [x0, y0, x1, y1] = d.box;
      pen.strokeRect(x0, y0, x1 - x0, y1 - y0);
      pen.fillText(`${d.label} ${(100 * d.score).toFixed(0)}%`, x0 + 2, Math.max(12, y0 - 4));
      const item = document.createElement("li");
      item.textContent = `${d.label}: ${(100 * d.score).toFixed(1)} % at [${d.box.map((v) => v.toFixed(0)).join(", ")}]`;
      list.append(item);
    }
    canvas.setAttribute("aria-label", `${body.data.length} boxes drawn on the image`);
    answer.replaceChildren(canvas, list);
  }

  async function imageClassify() {
    const labels = value("try-labels").split(",").map((l) => l.trim()).filter(Boolean);
    const body = await json(await call("/v1/image-classification", { image: await imageDataUrl(), labels }));
    const list = document.createElement("ul");
    for (const item of body.data) {
      const li = document.createElement("li");
      li.textContent = `${item.label}: ${(100 * item.score).toFixed(1)} %`;
      list.append(li);
    }
    answer.replaceChildren(list);
  }

  const run = { chat, classify, ner, similarity, detect, "image-classify": imageClassify }[kind];
  document.getElementById("try-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    answer.replaceChildren(paragraph("…", "hint"));
    try {
      await run();
    } catch (error) {
      const message = paragraph(error.message, "error");
      message.setAttribute("role", "alert");
      answer.replaceChildren(message);
    }
  });
})();
