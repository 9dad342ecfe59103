"""`cotforge eval`: exactly n samples per prompt through generate's scheduler and engines, then metrics.

Sampling is generate's own loop (`generate.options.resolve` / `run_job`: the same engines, fleets,
Ray, resume) under the fixed allocation with one round of `n` per prompt and `accept = n`: a prompt
never stops early on an accepted sample and nothing is cancelled, so every prompt ends with exactly
n judged samples whatever the timing (a metric must not depend on when sampling stopped). The chain
decides correctness; by default `filters/eval.yaml`, the verifying checks only (format, answer with
its choice / numeric routes, code). Once sampling is done, and before the run is marked complete,
the answers are grouped into vote classes (`votes.py`) and the metrics (`metrics.py`) are written:
`RUN/votes/` (sample id -> class), `RUN/metrics/` (the long table `cotforge query` shows as
`metrics`) and the manifest's `metrics`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from cotforge.checks.base import MISSING, VERIFIED
from cotforge.evaluation.metrics import PromptResult, compare_results, evaluate_results
from cotforge.evaluation.votes import answer_classes, votable
from cotforge.io.atomic import atomic_write_bytes
from cotforge.errors import CotforgeError
from cotforge.io.rundir import RunDir, source_marks
from cotforge.schema import METRIC_SCHEMA, VOTE_SCHEMA

EVAL_CHECKS = "eval"
DEFAULT_N = 16
# generate's sampling-policy options: eval fixes them (one round of n, no early stop)
POLICY_OPTIONS = ("k", "accept", "max_rounds", "budget", "max_per_round", "adaptive")


def eval_options(n: int, checks: str | list | None, options: dict) -> dict:
    """generate's options for an eval of n samples per prompt."""
    if n < 1:
        raise CotforgeError(f"--n {n}: must be at least 1")
    given = sorted(name for name in POLICY_OPTIONS if options.get(name) is not None)
    if given:
        raise CotforgeError(f"eval: {', '.join('--' + g.replace('_', '-') for g in given)} belong to generate; "
                            f"eval draws exactly --n samples per prompt")
    return {**options, "k": n, "accept": n, "max_rounds": 1, "budget": n, "max_per_round": n, "adaptive": False,
            "checks": checks or EVAL_CHECKS}


def evaluate(prompts: str | Path | None = None, out: str | Path | None = None, n: int = DEFAULT_N, *,
             recipe: str | Path | None = None, engine=None, checks: str | list | None = None,
             executor: str = "local", address: str | None = None, replicas: int | None = None,
             engine_options: dict | None = None, base_url: str | list[str] | None = None,
             overwrite: bool = False, bad_rows: str = "fail", fields: dict | None = None,
             argv: list[str] | None = None, **options) -> dict:
    """Run (or resume) an eval; returns generate's summary plus `metrics`
    (`{"overall", "by_source", "by_domain"}`). Engine options are generate's, by the same names, merged
    over `recipe` by the same rule (`generate.options`); a recipe's sampling policy and checks are not
    used (eval fixes the one, and its default chain is `filters/eval.yaml`)."""
    from cotforge.generate.options import resolve, run_job

    if isinstance(engine, str):
        options["engine"], engine = engine, None
    forced = eval_options(n, checks, options)
    job = resolve(prompts, out, command="eval", recipe=recipe, executor=executor, address=address,
                  replicas=replicas, engine_options=engine_options, base_url=base_url, **forced)
    return run_job(job, engine=engine, command="eval", finalize=finalize_eval, overwrite=overwrite,
                   bad_rows=bad_rows, fields=fields, argv=argv)


def finalize_eval(run: RunDir) -> dict:
    """Votes and metrics of a sampled eval run, written while the scheduler still holds the folder."""
    rows = sample_rows(run.path)
    config = run.manifest().get("config") or {}
    classes = answer_classes(rows, config.get("checks"), jobs=1)
    votes = [{"id": r["id"], "prompt_id": r["prompt_id"], "sample_idx": r["sample_idx"],
              "answer_class": classes.get(r["id"])} for r in rows]
    run.write_shard("votes", 0, pa.Table.from_pylist(votes, schema=VOTE_SCHEMA))
    results, excluded = prompt_results(rows, classes)
    metrics = evaluate_results(results)
    run.write_shard("metrics", 0, pa.Table.from_pylist(metric_rows(metrics), schema=METRIC_SCHEMA))
    return {"metrics": metrics, "eval": excluded}


def sample_rows(run_path: str | Path) -> list[dict]:
    """Every committed sample of a run with what the metrics need, in (prompt, sample index) order."""
    from cotforge.query import connect

    con = connect(run_path)
    prompt_columns = {row[0] for row in con.execute("DESCRIBE prompts").fetchall()}
    answer_type = "p.answer_type" if "answer_type" in prompt_columns else "NULL"
    # the verification stage's code names what was missing (`missing:gold`): nothing to verify against
    cursor = con.execute(f"""
        SELECT s.id, s.prompt_id, s.sample_idx, s.accepted, s.answer, s.completion_tokens, s.finish_reason,
               s.source, s.domain, s.prompt, {answer_type} AS answer_type, u.id IS NOT NULL AS unverifiable
        FROM samples s LEFT JOIN prompts p ON p.id = s.prompt_id
        LEFT JOIN (SELECT DISTINCT id FROM verdicts WHERE "check" = ? AND starts_with(coalesce(code, ''), ?)) u
          ON u.id = s.id
        ORDER BY s.prompt_id, s.sample_idx""", [VERIFIED, MISSING])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def prompt_results(rows: list[dict], classes: dict[str, int | None]) -> tuple[list[PromptResult], dict]:
    """One PromptResult per prompt; prompts with nothing to verify against (no gold, no tests: every
    sample unverifiable) are left out and counted."""
    by_prompt: dict[str, list[dict]] = {}
    for row in rows:
        by_prompt.setdefault(row["prompt_id"], []).append(row)
    results, unverifiable = [], 0
    for prompt_id, samples in by_prompt.items():
        if all(s["unverifiable"] for s in samples):
            unverifiable += 1
            continue
        first = samples[0]
        results.append(PromptResult(
            prompt_id, [bool(s["accepted"]) for s in samples], [classes.get(s["id"]) for s in samples],
            [s["completion_tokens"] for s in samples], [s["finish_reason"] for s in samples],
            first["source"], first["domain"], votable(first["answer_type"], first["domain"]), first["prompt"]))
    return results, {"unverifiable_prompts": unverifiable}


def load_results(run_path: str | Path, votes: bool = True) -> list[PromptResult]:
    """A run's prompts as PromptResults (eval or generate run): vote classes from the run's `votes`
    table when it covers every sample, else computed now (`votes=False`: no classes, for pass rates)."""
    run = RunDir(run_path)
    rows = sample_rows(run_path)
    classes: dict[str, int | None] = {}
    if votes:
        stored = run.read_table("votes")
        if stored is not None and stored.num_rows == len(rows):
            classes = dict(zip(stored.column("id").to_pylist(), stored.column("answer_class").to_pylist()))
        else:
            classes = answer_classes(rows, (run.manifest().get("config") or {}).get("checks"))
    return prompt_results(rows, classes)[0]


def run_metrics(run_path: str | Path, allow_partial: bool = False) -> dict:
    """The metrics of a run: stored by eval, else computed from its samples."""
    run = RunDir(run_path)
    source_marks([run_path], "eval", allow_partial)
    stored = run.manifest().get("metrics")
    if stored:
        return stored
    return evaluate_results(load_results(run_path))


def compare_runs(run_a: str | Path, run_b: str | Path, top: int = 10, allow_partial: bool = False) -> dict:
    """`cotforge eval --compare A B`: B against A, paired per prompt (metrics.compare_results)."""
    source_marks([run_a, run_b], "eval --compare", allow_partial)
    result = compare_results(load_results(run_a), load_results(run_b), top=top)
    if not result["prompts"]:
        raise CotforgeError(f"eval --compare: {run_a} and {run_b} share no prompt ids; compare runs of the "
                            f"same prompts")
    return result


def metric_rows(metrics: dict) -> list[dict]:
    """The metrics as a long table: (scope overall / source / domain, name, metric, value)."""
    rows = []
    scopes = [("overall", "all", metrics["overall"])]
    scopes += [("source", name, values) for name, values in metrics.get("by_source", {}).items()]
    scopes += [("domain", name, values) for name, values in metrics.get("by_domain", {}).items()]
    for scope, name, values in scopes:
        for metric, value in values.items():
            if metric == "pass@1_ci":
                rows += [{"scope": scope, "name": name, "metric": "pass@1_ci_low", "value": value[0]},
                         {"scope": scope, "name": name, "metric": "pass@1_ci_high", "value": value[1]}]
            elif isinstance(value, (int, float)) or value is None:
                rows.append({"scope": scope, "name": name, "metric": metric,
                             "value": None if value is None else float(value)})
    return rows


def write_json(path: str | Path, data: dict) -> None:
    atomic_write_bytes(Path(path), (json.dumps(data, indent=2) + "\n").encode())
