"""The `cotforge` command: a thin typer layer over the library (no logic lives only here)."""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from cotforge import __version__
from cotforge.errors import CotforgeError, Interrupted, environment_fault

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Manufacture DeepSeek-R1-style reasoning SFT data: generate -> filter -> mix -> export "
                       "-> train.")

BadRows = Annotated[str, typer.Option("--bad-rows", help="fail: stop at the first bad row; quarantine: keep "
                                                          "it in the run's quarantine table and go on")]
Fields = Annotated[list[str] | None, typer.Option("--field", help="FIELD=COLUMN: read FIELD from COLUMN")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="discard a run with another configuration")]
Executor = Annotated[str, typer.Option("--executor", help="local: this machine; ray: a Ray cluster (--jobs is "
                                                            "then the number of Ray workers, default all CPUs)")]
RayAddress = Annotated[str | None, typer.Option("--address", help="Ray cluster to join (default $RAY_ADDRESS, "
                                                                  "else a local Ray on this machine)")]
AllowPartial = Annotated[bool, typer.Option("--allow-partial", help="use an unfinished (killed, interrupted) run's "
                                                                     "committed rows; the data card says so")]

HubSplit = Annotated[str | None, typer.Option("--split", help="hf:// inputs: the split to read (default: every "
                                                                "split, each row with a `split` column)")]
HubConfig = Annotated[str | None, typer.Option("--config", help="hf:// inputs: the dataset config (subset) to read")]


def _hub_options(path: str, split: str | None, config: str | None) -> str:
    """A Hub input with --split / --config folded into its spec (which the run records)."""
    from cotforge.io.hub import is_hub, with_hub_options

    if not is_hub(path) and split is None and config is None:
        return path
    return with_hub_options(path, split, config)


def _version(value: bool) -> None:
    if value:
        print(f"cotforge {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                       help="print the version and exit")] = False) -> None:
    pass


@app.command()
def generate(
    prompts: Annotated[str | None, typer.Argument(help="prompt file or folder, or hf://datasets/ORG/NAME\\[@REV]\\[/PATH] "
                                                       "(or set `prompts` in --recipe)")]
    = None,
    out: Annotated[Path | None, typer.Option("--out", help="run folder (resumable)")] = None,
    recipe: Annotated[Path | None, typer.Option("--recipe", help="YAML recipe; options below override it")]
    = None,
    engine: Annotated[str | None, typer.Option("--engine", help="embedded | vllm | openai | replay")] = None,
    model: Annotated[str | None, typer.Option("--model", help="model name, folder or GGUF file")] = None,
    k: Annotated[int | None, typer.Option("--k", help="samples per prompt in round 0")] = None,
    accept: Annotated[int | None, typer.Option("--accept", help="accepted samples wanted per prompt")] = None,
    max_rounds: Annotated[int | None, typer.Option("--max-rounds")] = None,
    budget: Annotated[int | None, typer.Option("--budget", help="samples per prompt at most")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature")] = None,
    top_p: Annotated[float | None, typer.Option("--top-p")] = None,
    shard_size: Annotated[int | None, typer.Option("--shard-size", help="commit a shard every N samples (256)")]
    = None,
    shard_age: Annotated[float | None, typer.Option("--shard-age", help="... or once its oldest waited S s (30)")]
    = None,
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", help="sequences in flight (default: what saturates the engine; openai: 256 per server)")]
    = None,
    base_url: Annotated[list[str] | None, typer.Option(
        "--base-url", help="openai engine: server URL; repeat for a fleet (least-loaded dispatch)")] = None,
    engine_option: Annotated[list[str] | None, typer.Option(
        "--engine-option", help="KEY=VALUE passed to the engine (YAML value: 8, true, 0.5, text)")] = None,
    checks: Annotated[str | None, typer.Option("--checks", help="preset in filters/ or a comma list")] = None,
    template: Annotated[str | None, typer.Option("--template", help="chat | r1-zero | r1-zero-chat")] = None,
    fixed: Annotated[bool, typer.Option("--fixed", help="k per round for every short prompt (not adaptive)")]
    = False,
    repetition_detection: Annotated[str | None, typer.Option(
        "--repetition-detection", help="stop looping samples in the engine: default | off | MAX,MIN,COUNT")] = None,
    early_stop: Annotated[str | None, typer.Option(
        "--early-stop", help="cotforge's own early stop (the chain's repetition / language / length rules "
                             "run on each sample as it is generated): default | off")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", help="check worker processes (0: in-process; default: 1 beside the embedded CPU model, else up to 8 cores)")] = None,
    bad_rows: BadRows = "fail", field: Fields = None, overwrite: Overwrite = False,
    split: HubSplit = None, config: HubConfig = None,
    executor: Executor = "local", address: RayAddress = None,
    replicas: Annotated[int | None, typer.Option(
        "--replicas", help="--executor ray: engine replicas (default vllm: one per tensor x pipeline parallel "
                           "GPUs of the cluster; openai: one per --base-url)")] = None,
) -> None:
    """Rejection-sample completions per prompt, streaming, adaptive per prompt (vLLM, OpenAI fleet, embedded)."""
    from cotforge.generate.options import resolve, run_job
    from cotforge.generate.recipe import parse_engine_options
    from cotforge.generate.scheduler import format_generate_summary
    from cotforge.io.normalize import parse_field_overrides

    # the same two steps as cotforge.generate.generate(...): recipe + options -> job, then run it
    job = resolve(
        prompts, out, recipe=recipe, engine=engine, model=model, k=k, accept=accept, max_rounds=max_rounds,
        budget=budget, max_tokens=max_tokens, temperature=temperature, top_p=top_p, shard_size=shard_size,
        shard_age_s=shard_age, concurrency=concurrency, checks=checks, template=template, seed=seed, jobs=jobs,
        adaptive=False if fixed else None, engine_options=parse_engine_options(engine_option or []),
        base_url=base_url, executor=executor, address=address, replicas=replicas,
        repetition_detection=repetition_detection, early_stop=early_stop)
    job = dataclasses.replace(job, prompts=_hub_options(job.prompts, split, config))
    summary = run_job(job, overwrite=overwrite, bad_rows=bad_rows, fields=parse_field_overrides(field or []),
                      argv=sys.argv[1:])
    if "top_rejection" not in summary:  # say why when nothing was accepted
        from cotforge.stats import top_rejection

        summary["top_rejection"] = top_rejection(job.out)
    print(format_generate_summary(summary))
    if "ray" in summary:
        from cotforge.cluster.generate import format_ray_summary

        print(format_ray_summary(summary))


@app.command("eval")
def eval_cmd(
    prompts: Annotated[str | None, typer.Argument(help="prompt file or folder with gold answers or tests, or "
                                                      "hf://datasets/ORG/NAME\\[@REV]\\[/PATH]")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="run folder (resumable)")] = None,
    n: Annotated[int, typer.Option("--n", help="samples per prompt, exactly (no early stop)")] = 16,
    compare: Annotated[tuple[Path, Path] | None, typer.Option(
        "--compare", help="RUN_A RUN_B: B against A on the same prompts, paired per prompt (no sampling)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the metrics (or the comparison) as JSON")]
    = None,
    recipe: Annotated[Path | None, typer.Option("--recipe", help="generate recipe for the engine options")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="embedded | vllm | openai | replay")] = None,
    model: Annotated[str | None, typer.Option("--model", help="model name, folder (a checkpoint) or GGUF file")]
    = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature")] = None,
    top_p: Annotated[float | None, typer.Option("--top-p")] = None,
    shard_size: Annotated[int | None, typer.Option("--shard-size")] = None,
    shard_age: Annotated[float | None, typer.Option("--shard-age")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency")] = None,
    base_url: Annotated[list[str] | None, typer.Option("--base-url", help="openai engine: server URL (repeat)")]
    = None,
    engine_option: Annotated[list[str] | None, typer.Option("--engine-option", help="KEY=VALUE for the engine")]
    = None,
    checks: Annotated[str | None, typer.Option(
        "--checks", help="the chain that decides correctness (default: filters/eval.yaml, the verifying checks)")]
    = None,
    template: Annotated[str | None, typer.Option("--template", help="chat | r1-zero | r1-zero-chat | few-shot:F")]
    = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", help="check worker processes")] = None,
    bad_rows: BadRows = "fail", field: Fields = None, overwrite: Overwrite = False,
    split: HubSplit = None, config: HubConfig = None,
    executor: Executor = "local", address: RayAddress = None,
    replicas: Annotated[int | None, typer.Option("--replicas", help="--executor ray: engine replicas")] = None,
    allow_partial: AllowPartial = False,
) -> None:
    """Exactly --n samples per prompt, judged by the chain: pass@1, pass@k, maj@k, 95% CI, per source/domain."""
    from cotforge.evaluation.run import compare_runs, evaluate, write_json
    from cotforge.evaluation.table import format_comparison, format_metrics
    from cotforge.generate.recipe import parse_engine_options
    from cotforge.io.normalize import parse_field_overrides

    if compare:
        if prompts is not None or out is not None:
            raise CotforgeError("eval --compare RUN_A RUN_B compares two finished eval runs; give no PROMPTS or --out")
        result = compare_runs(compare[0], compare[1], allow_partial=allow_partial)
        print(format_comparison(result, compare[0], compare[1]))
        if json_out:
            write_json(json_out, result)
        return
    summary = evaluate(
        _hub_options(prompts, split, config) if prompts else prompts, out, n, recipe=recipe, engine=engine, model=model, max_tokens=max_tokens, temperature=temperature,
        top_p=top_p, shard_size=shard_size, shard_age_s=shard_age, concurrency=concurrency, checks=checks,
        template=template, seed=seed, jobs=jobs, engine_options=parse_engine_options(engine_option or []),
        base_url=base_url, executor=executor, address=address, replicas=replicas, overwrite=overwrite,
        bad_rows=bad_rows, fields=parse_field_overrides(field or []), argv=sys.argv[1:])
    metrics = summary["metrics"]
    print(format_metrics(metrics))
    skipped = summary.get("eval", {}).get("unverifiable_prompts")
    if skipped:
        print(f"note: {skipped} prompts had no gold answer or tests to verify against; left out of the metrics")
    if summary.get("quarantined"):
        print(f"note: {summary['quarantined']} prompts quarantined (bad rows, or the engine refused them); "
              f"see `cotforge query RUN 'SELECT * FROM quarantine'`")
    if json_out:
        write_json(json_out, {key: metrics[key] for key in ("overall", "by_source", "by_domain")})


@app.command()
def select(run: Annotated[Path, typer.Argument(help="an eval or generate run")],
           pass_rate: Annotated[str, typer.Option("--pass-rate", help="LO:HI, e.g. 0.1:0.9 (inclusive)")],
           out: Annotated[Path, typer.Option("--out", help="prompt file to write (JSONL)")],
           allow_partial: AllowPartial = False) -> None:
    """Write the prompts whose pass rate in RUN lies in [LO, HI] (with pass_rate and samples per row)."""
    from cotforge.evaluation.select import select_prompts

    result = select_prompts(run, pass_rate, out, allow_partial=allow_partial)
    print(f"selected {result['selected']} of {result['prompts']} prompts with pass rate in "
          f"[{result['low']:g}, {result['high']:g}] -> {out}")


@app.command("filter")
def filter_cmd(samples: Annotated[list[str], typer.Argument(
                   help="sample files or folders, or hf://datasets/ORG/NAME\\[@REV]\\[/PATH]")],
               out: Annotated[Path, typer.Option("--out", help="run folder to write (resumable)")],
               checks: Annotated[str, typer.Option("--checks", help="preset in filters/ or a comma list")] = "r1",
               jobs: Annotated[int | None, typer.Option("--jobs", help="worker processes (default: all cores)")]
               = None,
               bad_rows: BadRows = "fail", field: Fields = None, overwrite: Overwrite = False,
               chunk_rows: Annotated[int, typer.Option("--chunk-rows", help="input rows per committed shard")]
               = 2000, split: HubSplit = None, config: HubConfig = None,
               executor: Executor = "local", address: RayAddress = None,
               allow_partial: AllowPartial = False) -> None:
    """Run the R1 check chain over samples; every rejection is kept with its reason."""
    from cotforge.filtering import filter_samples
    from cotforge.io.normalize import parse_field_overrides
    from cotforge.stats import format_summary

    if (split is not None or config is not None) and not any(s.startswith("hf://") for s in samples):
        _hub_options(samples[0], split, config)  # says that --split / --config need an hf:// input
    samples = [_hub_options(s, split, config) if s.startswith("hf://") else s for s in samples]
    counts = filter_samples(samples, out, checks=checks, jobs=jobs, bad_rows=bad_rows,
                            fields=parse_field_overrides(field or []), overwrite=overwrite, chunk_rows=chunk_rows,
                            argv=sys.argv[1:], executor=executor, address=address, allow_partial=allow_partial)
    print(format_summary(counts))


@app.command()
def rewrite(run: Annotated[Path, typer.Argument(help="a run whose accepted samples are rewritten")],
            out: Annotated[Path, typer.Option("--out", help="run folder to write (resumable)")],
            engine: Annotated[str, typer.Option("--engine", help="embedded | vllm | openai")] = "embedded",
            model: Annotated[str | None, typer.Option("--model", help="rewriting model")] = None,
            checks: Annotated[str, typer.Option("--checks", help="re-check preset (after the pattern check)")]
            = "rewrite",
            max_tokens: Annotated[int, typer.Option("--max-tokens")] = 1024,
            temperature: Annotated[float, typer.Option("--temperature")] = 0.0,
            overwrite: Overwrite = False, allow_partial: AllowPartial = False) -> None:
    """Rewrite accepted R1-Zero-style outputs into |special_token|reasoning|special_token|summary, re-checked."""
    from cotforge.rewrite import RewriteConfig
    from cotforge.rewrite import rewrite as run_rewrite
    from cotforge.stats import format_summary

    config = RewriteConfig(engine=engine, model=model, checks=checks, max_tokens=max_tokens, temperature=temperature)
    print(format_summary(run_rewrite(run, out, config, overwrite=overwrite, argv=sys.argv[1:],
                                     allow_partial=allow_partial)))


@app.command()
def mix(recipe: Annotated[Path, typer.Argument(help="mix recipe YAML (paths relative to it)")],
        out: Annotated[Path, typer.Option("--out", help="run folder to write")],
        overwrite: Overwrite = False, allow_partial: AllowPartial = False) -> None:
    """Mix sources by quota with dedup and decontamination (the 600K/200K SFT mix)."""
    from cotforge.mix import format_report
    from cotforge.mix import mix as run_mix

    print(format_report(run_mix(recipe, out, overwrite=overwrite, argv=sys.argv[1:], allow_partial=allow_partial)))


@app.command()
def export(run: Annotated[Path, typer.Argument(help="a run or mix folder (its accepted rows are exported)")],
           out: Annotated[Path, typer.Option("--out", help="dataset folder to write")],
           style: Annotated[str, typer.Option("--style", help="messages | special-token | think | r1-zero")]
           = "messages",
           shard_rows: Annotated[int | None, typer.Option("--shard-rows", help="at most N rows per Parquet shard")]
           = None,
           max_shard_size: Annotated[str, typer.Option(
               "--max-shard-size", help="at most about this much Parquet per shard (500MB, 1GB, 200MiB)")] = "500MB",
           push_to_hub: Annotated[str | None, typer.Option("--push-to-hub", help="ORG/NAME dataset repo")]
           = None,
           private: Annotated[bool, typer.Option("--private", help="create the hub repo private")] = False,
           reasoning_field: Annotated[bool, typer.Option(
               "--reasoning-field", help="messages style: reasoning in `reasoning_content`, not in <think>")]
           = False,
           overwrite: Overwrite = False, allow_partial: AllowPartial = False) -> None:
    """Export accepted samples as a Hugging Face dataset folder with a data card."""
    from cotforge.export import export as run_export
    from cotforge.export import push
    from cotforge.io.sizes import parse_size

    options = {"reasoning_field": True} if reasoning_field else {}
    summary = run_export(run, out, style=style, shard_rows=shard_rows, overwrite=overwrite,
                         allow_partial=allow_partial, max_shard_bytes=parse_size(max_shard_size), **options)
    print(f"exported {summary['rows']} rows in {summary['shards']} shards ({summary['bytes']:,} bytes) to {out} "
          f"(style {style})")
    print(f"look at the run and review samples: cotforge view {run}")
    if push_to_hub:
        print(f"pushed to {push(out, push_to_hub, private=private)}")


@app.command()
def query(run: Annotated[Path, typer.Argument(help="a run folder")],
          sql: Annotated[str, typer.Argument(help="SQL over views samples, accepted, rejected, verdicts, "
                                                  "prompts, quarantine, reviews, metrics (eval runs)")],
          fmt: Annotated[str, typer.Option("--format", help="table | csv | json | jsonl")] = "table") -> None:
    """Query a run with DuckDB."""
    from cotforge.io.rundir import RunDir
    from cotforge.query import render, run_query

    status = RunDir(run).unfinished()
    if status is not None:
        print(f"cotforge: note: {run} is an unfinished run (status {status}); the query sees only the rows "
              f"committed so far", file=sys.stderr)
    columns, rows = run_query(run, sql)
    print(render(columns, rows, fmt))


@app.command("convert-embedded")
def convert_embedded(think: Annotated[bool, typer.Option(
        "--think", help="give the tokenizer <think>/</think> (for reasoning parsers such as vLLM's deepseek_r1)")]
        = False) -> None:
    """De-quantize the embedded SmolLM2 GGUF into a safetensors folder (cached) and print its path (for vLLM)."""
    from cotforge.engines.convert import converted_model

    print(converted_model("think" if think else "plain"))


@app.command()
def view(runs: Annotated[list[Path], typer.Argument(help="run or mix folders (two or more: compare them)")],
         port: Annotated[int, typer.Option("--port", help="TCP port")] = 8765,
         host: Annotated[str, typer.Option("--host", help="address to bind; off 127.0.0.1 a token is required")]
         = "127.0.0.1",
         token: Annotated[str | None, typer.Option("--token", envvar="COTFORGE_VIEW_TOKEN",
                                                   help="access token (made up when --host is not loopback)")]
         = None,
         reviewer: Annotated[str | None, typer.Option("--reviewer", help="name kept with each review")] = None) -> None:
    """Browse runs in a local web page: funnel, rejection reasons, prompts, samples, SQL; review by hand."""
    from cotforge.view.app import serve

    serve(runs, host=host, port=port, token=token, reviewer=reviewer)


@app.command()
def report(run: Annotated[Path, typer.Argument(help="a run or mix folder")],
           out: Annotated[Path, typer.Option("--out", help="HTML file to write")],
           samples: Annotated[int, typer.Option("--samples", help="accepted and rejected traces shown, each")] = 5,
           seed: Annotated[int, typer.Option("--seed", help="picks the traces shown")] = 0) -> None:
    """One self-contained HTML report (funnel, plots, sample traces): no server, no network."""
    from cotforge.view.report import build_report

    result = build_report(run, out, samples=samples, seed=seed)
    print(f"wrote {result['path']} ({result['bytes']:,} bytes; {result['accepted_shown']} accepted and "
          f"{result['rejected_shown']} rejected traces)")


train_app = typer.Typer(no_args_is_help=True, help="Thin TRL backend: `train sft` on the mix, `train grpo` with "
                        "the checks as rewards. GPUs: `accelerate launch [--config_file F] -m cotforge.cli train ...`")
app.add_typer(train_app, name="train")
TrainModel = Annotated[str, typer.Option("--model", help="embedded (SmolLM2-135M GGUF, CPU) or a model path/id")]
TrainConfig = Annotated[Path | None, typer.Option("--config", help="YAML/JSON of extra SFTConfig/GRPOConfig "
                                                                      "fields (deepspeed, bf16, lora: {r: 16}, ...)")]
Epochs = Annotated[float | None, typer.Option("--epochs", help="default 2 for sft (R1)")]
MaxSteps = Annotated[int | None, typer.Option("--max-steps", help="stop after N optimizer steps")]
Lora = Annotated[bool, typer.Option("--lora", help="train a LoRA adapter (peft); saves it merged")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="per-device batch size")]
LearningRate = Annotated[float | None, typer.Option("--lr", help="learning rate")]


@train_app.command("sft")
def train_sft_cmd(dataset: Annotated[Path, typer.Argument(help="exported dataset folder (messages or text)")],
                  out: Annotated[Path, typer.Option("--out", help="checkpoint folder")],
                  model: TrainModel = "embedded", epochs: Epochs = None, max_steps: MaxSteps = None,
                  lora: Lora = False, config: TrainConfig = None,
                  max_length: Annotated[int | None, typer.Option("--max-length")] = None,
                  batch_size: BatchSize = None, lr: LearningRate = None) -> None:
    """Supervised fine-tuning (TRL SFTTrainer) on an exported dataset."""
    import json

    from cotforge.train.sft import train_sft

    print(json.dumps(train_sft(dataset, out, model=model, epochs=epochs, max_steps=max_steps, lora=lora,
                               config=config, max_length=max_length, batch_size=batch_size, lr=lr)))


@train_app.command("grpo")
def train_grpo_cmd(dataset: Annotated[Path, typer.Argument(help="prompts with gold (JSONL/Parquet/folder)")],
                   out: Annotated[Path, typer.Option("--out", help="checkpoint folder")],
                   rewards: Annotated[str, typer.Option("--rewards", help="comma list of rewards/checks")]
                   = "accuracy,format,language",
                   num_generations: Annotated[int | None, typer.Option("--num-generations")] = None,
                   max_completion_length: Annotated[int | None, typer.Option("--max-completion-length")] = None,
                   model: TrainModel = "embedded", epochs: Epochs = None, max_steps: MaxSteps = None,
                   lora: Lora = False, config: TrainConfig = None, batch_size: BatchSize = None,
                   lr: LearningRate = None) -> None:
    """GRPO (TRL GRPOTrainer) from the R1-Zero template with cotforge checks as rewards."""
    import json

    from cotforge.train.grpo import train_grpo

    print(json.dumps(train_grpo(dataset, out, model=model, rewards=rewards, num_generations=num_generations,
                                max_completion_length=max_completion_length, epochs=epochs, max_steps=max_steps,
                                lora=lora, config=config, batch_size=batch_size, lr=lr)))


def _on_signal(signum: int, _frame) -> None:
    # Ignore repeats while the first one unwinds (workers closing, locks released), then stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signum)


def run(args: list[str] | None = None) -> int:
    """The command line without the process around it: runs one command (`args`, default sys.argv[1:])
    and returns its exit status; errors are one line on stderr. Tests call this in-process."""
    try:
        app(args=args, prog_name="cotforge")
    except SystemExit as done:  # click ends every command this way, the usage errors (2) too
        return _exit_status(done.code)
    except CotforgeError as err:
        print(str(err), file=sys.stderr)
        return 1
    except Interrupted as stop:
        print("cotforge: interrupted; rerun the same command to resume", file=sys.stderr)
        return 128 + stop.signum
    except Exception as err:  # an environment fault (disk full, read-only) from any library: one line
        fault = environment_fault(err)
        if fault is None:
            raise
        print(str(fault), file=sys.stderr)
        return 1
    return 0


def _exit_status(code) -> int:
    """What the process would exit with for sys.exit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main() -> None:
    # Ctrl-C and SIGTERM raise Interrupted, not KeyboardInterrupt: click would turn that into "Aborted!".
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    sys.exit(run())


if __name__ == "__main__":
    main()
