"""Generate's options: a recipe, then explicit options over it, then where it runs.

One rule for the library and the CLI (`cotforge generate` and `cotforge eval` pass their flags here
unchanged), so `cotforge.generate.generate(prompts, out, recipe=..., k=8)` and
`cotforge generate prompts --out run --recipe ... --k 8` make the same run:
- the recipe's keys (`recipe.load_generate_recipe`) are the base; an option given (not None) wins;
- `engine_options` merge key by key into the recipe's, the options winning; a `base_url` list of one
  is that one URL (so a single server is not a one-server fleet in the resume key);
- `prompts` and `out` come from the options, else from the recipe (relative to its file);
- `--replicas` belongs to the Ray executor: given with `executor="local"`, it is an error, never
  silently ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from cotforge.generate.config import GenerateConfig
from cotforge.errors import CotforgeError

EXECUTORS = ("local", "ray")
CONFIG_FIELDS = frozenset(f.name for f in fields(GenerateConfig))


@dataclass
class GenerateJob:
    """Everything a generate-like run needs before it starts."""

    prompts: str
    out: str
    config: GenerateConfig
    executor: str = "local"
    address: str | None = None
    replicas: int | None = None


def merge_options(recipe: str | Path | None = None, config: GenerateConfig | None = None,
                  engine_options: dict | None = None, base_url: str | list[str] | None = None,
                  **options) -> tuple[dict, dict]:
    """(GenerateConfig keyword arguments, {prompts, out} from the recipe): recipe (or `config`) first,
    then every option that is not None. Unknown option names are refused by name."""
    from cotforge.generate.recipe import load_generate_recipe

    if recipe is not None and config is not None:
        raise CotforgeError("generate: give a recipe or a GenerateConfig, not both")
    unknown = sorted(set(options) - CONFIG_FIELDS)
    if unknown:
        raise CotforgeError(f"generate: unknown option(s) {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(CONFIG_FIELDS))})")
    if recipe is not None:
        merged, paths = load_generate_recipe(recipe)
    else:
        merged, paths = (asdict(config) if config is not None else {}), {}
    merged.update({key: value for key, value in options.items() if value is not None})
    extra = dict(engine_options or {})
    if base_url:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        extra["base_url"] = urls if len(urls) > 1 else urls[0]
    if extra:
        merged["engine_options"] = {**(merged.get("engine_options") or {}), **extra}
    return merged, paths


def check_executor(executor: str, replicas: int | None) -> None:
    if executor not in EXECUTORS:
        raise CotforgeError(f"--executor {executor!r}: choose local or ray")
    if executor == "local" and replicas is not None:
        raise CotforgeError("--replicas needs --executor ray")
    if replicas is not None and replicas < 1:
        raise CotforgeError(f"--replicas {replicas}: must be at least 1")


def resolve(prompts: str | Path | None = None, out: str | Path | None = None, *, command: str = "generate",
            recipe: str | Path | None = None, config: GenerateConfig | None = None,
            executor: str = "local", address: str | None = None, replicas: int | None = None,
            engine_options: dict | None = None, base_url: str | list[str] | None = None,
            **options) -> GenerateJob:
    """The job the options describe (see the module docstring); one line for anything missing or wrong."""
    check_executor(executor, replicas)
    merged, paths = merge_options(recipe, config, engine_options, base_url, **options)
    prompts = prompts or paths.get("prompts")
    out = out or paths.get("out")
    if not prompts or not out:
        raise CotforgeError(f"{command}: give PROMPTS and --out (or `prompts` and `out` in --recipe)")
    return GenerateJob(str(prompts), str(out), GenerateConfig(**merged), executor, address, replicas)


def run_job(job: GenerateJob, engine=None, **run_options) -> dict:
    """Run (or resume) the job locally or on Ray; `run_options` go to the scheduler (overwrite,
    bad_rows, fields, argv, command, policy)."""
    if job.executor == "ray":
        if engine is not None:
            raise CotforgeError("generate: an engine object runs locally; --executor ray builds its own replicas")
        from cotforge.cluster.generate import generate_on_ray  # Ray plugs in here; imported only when asked

        return generate_on_ray(job.prompts, job.out, job.config, address=job.address, replicas=job.replicas,
                               **run_options)
    from cotforge.generate.scheduler import generate

    return generate(job.prompts, job.out, job.config, engine=engine, **run_options)


RUN_OPTIONS = ("overwrite", "bad_rows", "fields", "argv")


def generate(prompts: str | Path | None = None, out: str | Path | None = None,
             config: GenerateConfig | None = None, engine=None, *, recipe: str | Path | None = None,
             executor: str = "local", address: str | None = None, replicas: int | None = None,
             engine_options: dict | None = None, base_url: str | list[str] | None = None,
             overwrite: bool = False, bad_rows: str = "fail", fields: dict | None = None,
             argv: list[str] | None = None, **options) -> dict:
    """Run (or resume) `cotforge generate`; returns the summary with its funnel.

    The options are the CLI's, by their `GenerateConfig` names (`k=8`, `max_tokens=512`, ...), merged
    over `recipe` or `config` as the module docstring says. `engine` is an engine name (`"vllm"`) like
    `--engine`, or an `Engine` object to sample from (tests, embedding programs)."""
    if isinstance(engine, str):
        options["engine"], engine = engine, None
    job = resolve(prompts, out, recipe=recipe, config=config, executor=executor, address=address,
                  replicas=replicas, engine_options=engine_options, base_url=base_url, **options)
    return run_job(job, engine=engine, overwrite=overwrite, bad_rows=bad_rows, fields=fields, argv=argv)
