"""The mix recipe: YAML -> validated `Recipe`. Paths are relative to the recipe file.

```yaml
name: r1-sft-mix
seed: 0
sources:
  - name: reasoning
    path: runs/math        # a cotforge run folder (its accepted samples), a data file / folder, or
                           # hf://datasets/ORG/NAME[@REV][/PATH] with optional split: / config: keys
    where: "domain = 'math'"   # optional DuckDB filter on the source's rows
    quota: 600000          # rows (int), a fraction (float <= 1) of the rows left after per_prompt,
                           # or per domain: {math: 300000, code: 0.5, ...} (other domains: dropped)
    per_prompt: 1          # at most this many samples per prompt_id
    select: shortest       # which samples per_prompt keeps: random | shortest | longest
    pass_rate: [0.1, 0.9]  # run folders only: keep prompts whose pass rate in that run (accepted /
                           # judged samples) lies in [LO, HI], as `cotforge select --pass-rate LO:HI`
  - name: self_cognition
    self_cognition: self_cognition.yaml   # templated rows (cotforge.mix.selfcog) instead of a path
    quota: 2000
    dedup: false           # exempt this source from dedup (its answers repeat on purpose); kept
                           # rows still enter the index, so later sources are compared with them
dedup:
  exact: true              # normalized text hash
  near: {threshold: 0.8, num_perm: 128, ngram: 5}
  text: prompt_summary     # what is compared: prompt_summary | prompt | sample (prompt + completion)
                           # between any two rows, samples of one prompt too: with per_prompt > 1
                           # and prompt_summary, a prompt keeps only samples with different answers
decontaminate:
  against: [evals/math500.jsonl]
  ngram: 13
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cotforge.errors import CotforgeError
from cotforge.io.hub import is_hub, with_hub_options
from cotforge.io.yamlfile import load_mapping

SELECT_POLICIES = ("random", "shortest", "longest")
DEDUP_TEXTS = ("prompt_summary", "prompt", "sample")
_SOURCE_KEYS = {"name", "path", "self_cognition", "generate", "where", "quota", "per_prompt", "select", "fields", "dedup",
                "pass_rate", "split", "config"}


@dataclass
class Source:
    name: str
    path: Path | str | None = None  # a str only for a Hub spec (hf://datasets/...)
    self_cognition: Path | None = None
    where: str | None = None
    quota: int | float | dict[str, int | float] | None = None  # None: every row
    per_prompt: int | None = None
    select: str = "random"
    fields: dict[str, str] = field(default_factory=dict)
    dedup: bool = True
    pass_rate: tuple[float, float] | None = None  # [LO, HI] of the prompt's pass rate in a run-folder source


@dataclass
class Recipe:
    path: Path
    name: str
    seed: int
    sources: list[Source]
    exact: bool = True
    near: dict | None = None  # {threshold, num_perm, ngram}
    dedup_text: str = "prompt_summary"
    evals: dict[str, Path] = field(default_factory=dict)  # label as written -> resolved path
    eval_ngram: int = 13
    raw: dict = field(default_factory=dict)

    def inputs(self) -> list[Path]:
        """Every file the mix reads (fingerprinted into the run's config hash)."""
        paths = [s.path or s.self_cognition for s in self.sources]
        return [*paths, *self.evals.values()]


def _quota(value, where: str):
    if value is None:
        return None
    if isinstance(value, dict):
        return {str(domain): _quota(v, f"{where}.{domain}") for domain, v in value.items()}
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise CotforgeError(f"{where}: quota must be a row count, a fraction <= 1, or a map of domains")
    if isinstance(value, float) and value > 1:
        raise CotforgeError(f"{where}: a fractional quota must be <= 1 (got {value}); write rows as an integer")
    return value


def _source(entry: dict, index: int, base: Path) -> Source:
    if not isinstance(entry, dict) or not entry.get("name"):
        raise CotforgeError(f"sources[{index}]: needs a 'name'")
    where = f"source '{entry['name']}'"
    unknown = set(entry) - _SOURCE_KEYS
    if unknown:
        raise CotforgeError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_SOURCE_KEYS)})")
    if "generate" in entry:
        raise CotforgeError(f"{where}: 'generate:' sources (responses written by an engine) are not built yet; "
                            f"generate them with `cotforge generate` and give the run folder as 'path:'")
    kinds = [k for k in ("path", "self_cognition") if entry.get(k)]
    if len(kinds) != 1:
        raise CotforgeError(f"{where}: give exactly one of 'path' or 'self_cognition'")
    if ("split" in entry or "config" in entry) and not is_hub(entry.get("path")):
        raise CotforgeError(f"{where}: 'split' and 'config' apply to a path: hf://datasets/... source")
    if is_hub(entry.get("path")):  # a Hub dataset, read streaming; split/config go into its spec
        resolved = with_hub_options(entry["path"], entry.get("split"), entry.get("config"))
    else:
        resolved = (base / entry[kinds[0]]).resolve()
    if not is_hub(resolved) and not resolved.exists():
        raise CotforgeError(f"{where}: {entry[kinds[0]]} not found (looked at {resolved})")
    select = entry.get("select", "random")
    if select not in SELECT_POLICIES:
        raise CotforgeError(f"{where}: select {select!r}: choose one of {', '.join(SELECT_POLICIES)}")
    per_prompt = entry.get("per_prompt")
    if per_prompt is not None and (not isinstance(per_prompt, int) or per_prompt < 1):
        raise CotforgeError(f"{where}: per_prompt must be a positive integer")
    pass_rate = _pass_rate(entry.get("pass_rate"), where)
    if pass_rate is not None and not (kinds[0] == "path" and (resolved / "manifest.json").is_file()):
        raise CotforgeError(f"{where}: pass_rate needs a run folder as 'path' (the pass rate is its "
                            f"accepted / judged samples per prompt)")
    return Source(name=str(entry["name"]), path=resolved if kinds[0] == "path" else None, pass_rate=pass_rate,
                  self_cognition=resolved if kinds[0] == "self_cognition" else None, where=entry.get("where"),
                  quota=_quota(entry.get("quota"), where), per_prompt=per_prompt, select=select,
                  fields=dict(entry.get("fields") or {}), dedup=bool(entry.get("dedup", True)))


def _pass_rate(value, where: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            or not 0 <= value[0] <= value[1] <= 1):
        raise CotforgeError(f"{where}: pass_rate must be [LO, HI] with 0 <= LO <= HI <= 1 (got {value!r})")
    return float(value[0]), float(value[1])


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    raw = load_mapping(path, "recipe")
    base = path.resolve().parent
    entries = raw.get("sources") or []
    if not entries:
        raise CotforgeError(f"{path}: a mix recipe needs 'sources'")
    sources = [_source(entry, i, base) for i, entry in enumerate(entries)]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise CotforgeError(f"{path}: source names must be unique ({names})")
    dedup = raw.get("dedup") or {}
    near = dedup.get("near")
    if near is True:
        near = {}
    if near is False:  # the error below offers `false`: it turns near dedup off
        near = None
    if near is not None and not isinstance(near, dict):
        raise CotforgeError(f"{path}: dedup.near: expected a map such as {{threshold: 0.8}} or false")
    if near is not None:
        near = {"threshold": 0.8, "num_perm": 128, "ngram": 5, **near}
        if not 0 < float(near["threshold"]) <= 1:
            raise CotforgeError(f"{path}: dedup.near.threshold must be in (0, 1]")
    text = dedup.get("text", "prompt_summary")
    if text not in DEDUP_TEXTS:
        raise CotforgeError(f"{path}: dedup.text {text!r}: choose one of {', '.join(DEDUP_TEXTS)}")
    decontam = raw.get("decontaminate") or {}
    evals = {}
    for label in decontam.get("against") or []:
        resolved = label if is_hub(label) else (base / label).resolve()
        if not is_hub(resolved) and not resolved.exists():
            raise CotforgeError(f"{path}: decontaminate: eval set {label} not found (looked at {resolved})")
        evals[str(label)] = resolved
    return Recipe(path=path, name=str(raw.get("name") or path.stem), seed=int(raw.get("seed", 0)),
                  sources=sources, exact=bool(dedup.get("exact", True)), near=near, dedup_text=text,
                  evals=evals, eval_ngram=int(decontam.get("ngram", 13)), raw=raw)
