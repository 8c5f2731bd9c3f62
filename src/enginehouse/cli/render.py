"""Human views of the API's objects (the JSON shapes of ``enginehouse.api.views``)."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from enginehouse.cli.output import key_values, status_text, table, when

Obj = dict[str, Any]


def with_reason(obj: Obj) -> Text:
    text = status_text(obj.get("status"))
    if obj.get("status_reason"):
        text.append(f" ({obj['status_reason']})", style="dim")
    return text


def status_line(label: str, obj: Obj) -> Text:
    """``engine e1: Provisioning (waiting for …)``: one line after a change of status."""
    text = Text(f"{label}: ")
    text.append_text(with_reason(obj))
    return text


def source_text(source: Obj | None) -> str:
    source = source or {}
    if source.get("type") == "training_job":
        return f"{source.get('training_id')} checkpoint {source.get('checkpoint')}"
    if source.get("type") == "experiment":
        return f"{source.get('experiment_id')} version {source.get('version')}"
    return str(source.get("type", ""))


def _option_text(engine: Obj) -> str:
    """The option in use, and why when the server picked it (``auto``)."""
    requested = engine.get("deployment_option") or "auto"
    selected = engine.get("selected_deployment_option") or {}
    name = selected.get("name")
    if not name or name == requested:
        return requested
    return f"{name} ({requested}: {selected.get('reason') or 'picked by the server'})"


def _replica_count(engine: Obj) -> str:
    replicas = engine.get("replicas") or []
    ready = sum(1 for r in replicas if r.get("status") == "ready")
    return f"{ready}/{len(replicas)}"


def engines_table(engines: list[Obj]) -> Table:
    # What fits 80 columns; option, reason and deployments are in `engines show`.
    rows = [(e["id"], e["name"], e["task_type"], e["base_model"], status_text(e.get("status")),
             _replica_count(e)) for e in engines]
    return table(("ID", "NAME", "TASK TYPE", "BASE MODEL", "STATUS", "READY"), rows)


def engine_view(engine: Obj) -> RenderableType:
    details = key_values([
        ("id", engine["id"]),
        ("name", engine["name"]),
        ("task type", engine["task_type"]),
        ("base model", engine["base_model"]),
        ("status", with_reason(engine)),
        ("deployment option", _option_text(engine)),
        ("autoscaling", engine.get("autoscaling")),
        ("resource management", engine.get("resource_management_config")),
        ("runtime options", engine.get("runtime_options")),
        ("created", engine.get("created_at")),
        ("last access", engine.get("last_access_timestamp")),
        ("next", _next_transition_text(engine)),
    ], title=f"engine {engine['name']}")
    parts: list[RenderableType] = [details]
    if engine.get("deployments"):
        parts.append(deployments_table(engine["deployments"], title="deployments"))
    if engine.get("replicas"):
        parts.append(replicas_table(engine["replicas"]))
    return Group(*parts)


def _next_transition_text(engine: Obj) -> str | None:
    """"deactivate at …" when the engine's schedule or inactive timeout will move it; else None."""
    change, at = engine.get("next_transition"), engine.get("next_transition_at")
    return f"{change} at {at}" if change and at else None


def replicas_table(replicas: list[Obj]) -> Table:
    rows = [(r["id"], status_text(r.get("status")), r.get("url"), r.get("in_flight"),
             when(r.get("started_at"))) for r in replicas]
    return table(("ID", "STATUS", "URL", "IN FLIGHT", "STARTED"), rows, title="replicas")


def deployments_table(
    deployments: list[Obj], title: str | None = None, engine_names: dict[str, str] | None = None
) -> Table:
    """``engine_names`` (id → name) shows engines by name; without it the column is left out."""
    rows, columns = [], ["ID", "NAME", "KIND", "SOURCE", "STATUS", "REASON"]
    if engine_names is not None:
        columns.insert(2, "ENGINE")
    for d in deployments:
        row = [d["id"], d["name"], d.get("kind"), source_text(d.get("source")),
               status_text(d.get("status")), d.get("status_reason")]
        if engine_names is not None:
            row.insert(2, engine_names.get(d.get("engine_id", ""), d.get("engine_id")))
        rows.append(row)
    return table(columns, rows, title=title)


def deployment_view(deployment: Obj) -> RenderableType:
    return key_values([
        ("id", deployment["id"]),
        ("name", deployment["name"]),
        ("engine", deployment.get("engine_id")),
        ("kind", deployment.get("kind")),
        ("source", source_text(deployment.get("source"))),
        ("task type", deployment.get("task_type")),
        ("status", with_reason(deployment)),
        ("metadata", deployment.get("metadata")),
        ("created", deployment.get("created_at")),
        ("updated", deployment.get("updated_at")),
    ], title=f"deployment {deployment['name']}")


def jobs_table(jobs: list[Obj]) -> Table:
    rows = [(j["id"], j["name"], j["task_type"], j["base_model"], status_text(j.get("status")),
             f"{j.get('progress') or 0:g}%",
             ", ".join(str(c["checkpoint"]) for c in j.get("checkpoints") or []),
             when(j.get("created_at"))) for j in jobs]
    columns = ("ID", "NAME", "TASK TYPE", "BASE MODEL", "STATUS", "PROGRESS", "CHECKPOINTS", "CREATED")
    return table(columns, rows)


def job_view(job: Obj) -> RenderableType:
    detail = job.get("progress_detail") or {}
    progress = f"{job.get('progress') or 0:g}%"
    if detail.get("total_steps"):
        progress += f" (step {detail.get('step')} of {detail['total_steps']}, epoch {detail.get('epoch')}"
        progress += f", loss {detail['loss']:.4g})" if isinstance(detail.get("loss"), (int, float)) else ")"
    datasets = ", ".join(f"{role} {job[key]}" for role, key in (("train", "train_dataset_id"),
                                                                 ("test", "test_dataset_id")) if job.get(key))
    details = key_values([
        ("id", job["id"]),
        ("name", job["name"]),
        ("task type", job["task_type"]),
        ("base model", job["base_model"]),
        ("status", status_text(job.get("status"))),
        ("reason", job.get("status_reason")),
        ("progress", progress),
        ("datasets", datasets or None),
        ("created", job.get("created_at")),
        ("finished", job.get("finished_at")),
    ], title=f"training job {job['name']}")
    checkpoints = job.get("checkpoints") or []
    rows = [(c["checkpoint"], c["path"], c.get("test_results")) for c in checkpoints]
    return Group(details, table(("CHECKPOINT", "PATH", "TEST RESULTS"), rows, title="checkpoints"))


def datasets_table(datasets: list[Obj]) -> Table:
    rows = [(d["id"], d["name"], d["rows"], d["bytes"], when(d.get("created_at"))) for d in datasets]
    return table(("ID", "NAME", "ROWS", "BYTES", "CREATED"), rows)


def dataset_view(dataset: Obj) -> RenderableType:
    return key_values([(key, dataset.get(key)) for key in ("id", "name", "rows", "bytes", "created_at")],
                      title=f"dataset {dataset['name']}")


def experiments_table(experiments: list[Obj]) -> Table:
    rows = [(e["id"], e["name"], e["mode"], e["base_model"], e.get("examples"), e.get("latest_version"),
             status_text((e.get("versions") or [{}])[-1].get("status")), when(e.get("created_at")))
            for e in experiments]
    return table(("ID", "NAME", "MODE", "BASE MODEL", "EXAMPLES", "VERSION", "STATUS", "CREATED"), rows)


def experiment_view(experiment: Obj) -> RenderableType:
    details = key_values([
        ("id", experiment["id"]),
        ("name", experiment["name"]),
        ("mode", f"{experiment['mode']} (served as {experiment['task_type']})"),
        ("base model", experiment["base_model"]),
        ("labels", ", ".join(experiment.get("labels") or [])),
        ("examples", experiment.get("examples")),
        ("created", experiment.get("created_at")),
    ], title=f"experiment {experiment['name']}")
    classes = table(("CLASS", "DESCRIPTION"), [(c["name"], c["description"]) for c in experiment["classes"]],
                    title="classes")
    versions = table(
        ("VERSION", "KIND", "STATUS", "TEST RESULTS", "VERSION 1 ON THE SAME EXAMPLES", "TRAINING JOB"),
        [(v["version"], v["kind"], status_text(v["status"]), v.get("test_results"), v.get("baseline_results"),
          v["training_id"]) for v in experiment.get("versions") or []],
        title="versions")
    return Group(details, classes, versions)


def events_table(events: list[Obj]) -> Table:
    rows = [(when(e.get("at")), e.get("name") or e.get("object"), status_text(e.get("from")),
             status_text(e.get("to")), e.get("reason")) for e in events]
    return table(("AT", "OBJECT", "FROM", "TO", "REASON"), rows)


def options_table(options: list[Obj]) -> Table:
    rows = []
    for o in options:
        cost = o.get("hourly_cost_usd") or {}
        accelerator = o.get("accelerator")
        if accelerator and o.get("accelerator_memory_gb"):
            accelerator = f"{accelerator} {o['accelerator_memory_gb']:g} GB"
            if (o.get("accelerator_count") or 1) > 1:
                accelerator = f"{o['accelerator_count']} × {accelerator}"
        rows.append((o["name"], accelerator, o.get("cpus"), o.get("memory_gb"),
                     f"${cost.get('min', 0):g}-{cost.get('max', 0):g}/h",
                     "yes" if o.get("available") else "no"))
    return table(("NAME", "ACCELERATOR", "CPUS", "MEMORY GB", "COST", "AVAILABLE"), rows)
