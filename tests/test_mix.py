"""Mix: per_prompt + select, decontamination, exact/near dedup, quotas and shortfalls, determinism."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import write_jsonl

from cotforge.errors import CotforgeError
from cotforge.io.rundir import RunDir
from cotforge.mix import mix
from cotforge.query import run_query
from cotforge.schema import SAMPLE_SCHEMA, to_table

WORDS = ["apple", "river", "stone", "cloud", "mirror", "garden", "violin", "copper", "lantern", "meadow", "harbor",
         "pencil", "falcon", "canyon", "velvet", "orbit", "thunder", "maple", "silver", "island", "compass", "ember",
         "willow", "quartz"]
EVAL_PROMPT = ("A train leaves the station at noon and travels at sixty miles per hour toward a city that is "
               "three hundred miles away; when does it arrive?")
EVAL_PROMPT_ZH = "一列火车中午从车站出发以每小时六十英里的速度驶向三百英里外的城市请问它什么时候到达"


def _text(seed: int, n: int = 40) -> str:
    return " ".join(WORDS[(seed * 7 + i * (seed % 5 + 1)) % len(WORDS)] + str((seed + i) % 97) for i in range(n))


def _reasoning_run(path: Path, prompts: int = 10) -> Path:
    """Each prompt: 3 accepted samples (reasoning lengths 1x, 2x, 3x) and a longer rejected one."""
    rows = []
    for p in range(prompts):
        for k in range(4):
            reasoning = f"think {p} " + _text(300 + 4 * p + k, 10 * (k + 1))  # distinct, not near duplicates
            rows.append({"id": f"r{p}-{k}", "prompt_id": f"rp{p}", "sample_idx": k,
                         "prompt": f"Math problem {p}: {_text(p, 20)}", "domain": "math" if p % 2 else "code",
                         "source": "numina", "reasoning": reasoning, "summary": f"Answer {p}",
                         "completion": f"<think>{reasoning}</think>Answer {p}", "accepted": k < 3,
                         "verdicts": [{"check": "format", "passed": k < 3, "score": None, "reason": None}]})
    with RunDir.open(path, "filter", {"checks": ["format"]}, []) as run:
        run.write_shard("samples", 0, to_table(rows, SAMPLE_SCHEMA))
        run.update_manifest(status="complete")  # a finished run: mix refuses unfinished ones
    return path


@pytest.fixture
def world(tmp_path: Path) -> Path:
    _reasoning_run(tmp_path / "runs" / "math")
    general = [{"instruction": f"Write about topic {i}. {_text(100 + i, 12)}", "response": _text(200 + i, 80),
                "category": "writing"} for i in range(12)]
    general += [
        dict(general[0]),  # identical row: same prompt, same response
        {"instruction": "  " + general[1]["instruction"].upper() + " ", "response": general[1]["response"],
         "category": "writing"},  # same text after normalization, another prompt id
        {"instruction": general[2]["instruction"] + " please",
         "response": general[2]["response"].replace(general[2]["response"].split()[20], "zebra", 1),
         "category": "writing"},  # near duplicate
        {"instruction": f"Solve this: {EVAL_PROMPT.upper()} Explain briefly.", "response": "At 5 pm.",
         "category": "qa"},  # contains the eval prompt
        {"messages": [{"role": "user", "content": f"请回答：{EVAL_PROMPT_ZH[:20]}？"},
                      {"role": "assistant", "content": "下午五点。"}], "category": "qa"},  # CJK overlap
        {"conversations": [{"from": "human", "value": "Translate 'cat' to French."},
                           {"from": "gpt", "value": "<think>cat is chat</think>chat"}], "category": "translation"},
    ]
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "general.jsonl", general)
    (tmp_path / "evals").mkdir()
    write_jsonl(tmp_path / "evals" / "math500.jsonl", [{"problem": EVAL_PROMPT, "answer": "5 pm"}])
    write_jsonl(tmp_path / "evals" / "cmath.jsonl", [{"question": EVAL_PROMPT_ZH, "answer": "5"}])
    return tmp_path


def _recipe(world: Path, body: str, name: str = "recipe.yaml") -> Path:
    path = world / name
    path.write_text(body)
    return path


BASE = """
name: test-mix
seed: {seed}
sources:
  - name: reasoning
    path: runs/math
    quota: {quota}
    per_prompt: 1
    select: {select}
  - name: non_reasoning
    path: data/general.jsonl
    quota: 100
dedup:
  exact: true
  near: {{threshold: 0.8}}
  text: sample  # several samples per prompt share their answer: compare whole samples
decontaminate:
  against: [evals/math500.jsonl, evals/cmath.jsonl]
  ngram: 13
"""


def _rows(out: Path, where: str = "true") -> list[dict]:
    columns, rows = run_query(out, f"SELECT id, prompt_id, source, accepted, prompt, metadata, "
                                   f"verdicts[-1].reason AS reason FROM samples WHERE {where} ORDER BY id")
    return [dict(zip(columns, row)) for row in rows]


def test_reasons_for_planted_duplicates_and_contamination(world: Path) -> None:
    out = world / "mix"
    report = mix(_recipe(world, BASE.format(seed=0, quota=6, select="shortest")), out)
    listed = _rows(out, "source = 'non_reasoning'")
    rows = {r["prompt"]: r for r in listed if r["accepted"] or not r["reason"].startswith("exact")}
    general = [json.loads(line) for line in (world / "data" / "general.jsonl").read_text().splitlines()]
    kept_ids = {r["id"] for r in listed if r["accepted"]}
    # the identical row (same id: ids hash prompt + completion) and the case/space variant: the first of
    # each pair is kept, the other names it
    exact = [r for r in listed if (r["reason"] or "").startswith("exact duplicate of")]
    assert len(exact) == 2
    identical = rows[general[0]["instruction"]]
    assert identical["accepted"]
    variant = {general[1]["instruction"], general[13]["instruction"]}
    kept_variant = next(r for r in listed if r["prompt"] in variant and r["accepted"])
    assert sorted((r["prompt"] in variant, r["reason"]) for r in exact) == [
        (False, f"exact duplicate of {identical['id']}"), (True, f"exact duplicate of {kept_variant['id']}")]
    near = [r for r in listed if (r["reason"] or "").startswith("near duplicate")]
    assert len(near) == 1
    match = re.fullmatch(r"near duplicate of (\S+) \(jaccard (0\.\d\d|1\.00)\)", near[0]["reason"])
    assert match and match.group(1) in kept_ids and float(match.group(2)) >= 0.8
    planted = {rows[general[2]["instruction"]]["id"], rows[general[2]["instruction"] + " please"]["id"]}
    assert {match.group(1), near[0]["id"]} == planted
    contaminated = sorted(r["reason"] for r in listed if "contaminated" in (r["reason"] or ""))
    assert contaminated == ["contaminated by eval evals/cmath.jsonl (13-gram overlap)",
                            "contaminated by eval evals/math500.jsonl (13-gram overlap)"]
    assert report["dropped"]["contaminated"] == 2 and report["dropped"]["exact duplicate"] == 2
    # chat rows: the last assistant turn is the completion, the think block is parsed out
    translation = rows["Translate 'cat' to French."]
    assert translation["accepted"]
    assert json.loads(translation["metadata"])["original_source"] is None


def test_per_prompt_select_and_quota(world: Path) -> None:
    out = world / "mix"
    report = mix(_recipe(world, BASE.format(seed=0, quota=6, select="shortest")), out)
    kept = _rows(out, "source = 'reasoning' AND accepted")
    assert len(kept) == 6 and report["sources"]["reasoning"]["kept"] == 6
    assert all(r["id"].endswith("-0") for r in kept)  # the shortest accepted sample of each prompt
    assert len({r["prompt_id"] for r in kept}) == 6
    reasons = [r["reason"] for r in _rows(out, "source = 'reasoning' AND NOT accepted")]
    assert reasons.count("over per_prompt") == 20 and reasons.count("over quota") == 4
    assert not any(r["id"].endswith("-3") for r in _rows(out, "source = 'reasoning'"))  # rejected upstream
    assert json.loads(kept[0]["metadata"])["original_source"] == "numina"
    assert report["shortfalls"] == [{"source": "non_reasoning", "domain": None, "quota": 100,
                                     "kept": report["sources"]["non_reasoning"]["kept"],
                                     "missing": 100 - report["sources"]["non_reasoning"]["kept"]}]

    longest = world / "mix-longest"
    mix(_recipe(world, BASE.format(seed=0, quota=10, select="longest"), "longest.yaml"), longest)
    assert {r["id"][-2:] for r in _rows(longest, "source = 'reasoning' AND accepted")} == {"-2"}


def test_deterministic_under_seed_and_fraction_quota(world: Path) -> None:
    recipe = _recipe(world, BASE.format(seed=3, quota=0.5, select="random"))
    mix(recipe, world / "a")
    mix(recipe, world / "b")
    assert _rows(world / "a") == _rows(world / "b")
    assert len(_rows(world / "a", "accepted AND source = 'reasoning'")) == 5
    other = _recipe(world, BASE.format(seed=4, quota=0.5, select="random"), "seed4.yaml")
    mix(other, world / "c")
    picks = {seed: {r["prompt_id"] for r in _rows(world / d, "accepted AND source = 'reasoning'")}
             for seed, d in ((3, "a"), (4, "c"))}
    assert picks[3] != picks[4]  # 252 ways to pick 5 of 10: another seed picks another subset


def test_domain_quotas_and_cli(world: Path, cli) -> None:
    recipe = _recipe(world, """
seed: 0
sources:
  - name: reasoning
    path: runs/math
    per_prompt: 2
    quota: {math: 4, code: 20}
dedup:
  text: sample  # two samples of a prompt share their answer: compare whole samples
""")
    result = cli("mix", recipe, "--out", world / "mix", check=True)
    assert "SHORTFALL reasoning/code: kept 10 of quota 20 (10 missing)" in result.stdout
    counts = cli("query", world / "mix", "SELECT domain, count(*) FROM accepted GROUP BY 1 ORDER BY 1",
                 "--format", "json", check=True)
    assert json.loads(counts.stdout) == [{"domain": "code", "count_star()": 10}, {"domain": "math", "count_star()": 4}]
    manifest = RunDir(world / "mix").manifest()
    assert manifest["status"] == "complete" and manifest["mix"]["dropped"]["over quota"] == 6
    # a mix exports like any run: its kept rows, with the mix funnel and shortfall on the card
    cli("export", world / "mix", "--out", world / "ds", "--style", "special-token", check=True)
    datasets = pytest.importorskip("datasets")
    assert len(datasets.load_dataset(str(world / "ds"), split="train")) == 14
    card = (world / "ds" / "README.md").read_text()
    assert "| over quota | 6 | 14 |" in card and "- reasoning/code: 10 of 20 (10 missing)" in card


def test_generate_source_is_not_built_yet(world: Path) -> None:
    recipe = _recipe(world, "sources:\n  - name: writing\n    generate: {engine: vllm}\n")
    with pytest.raises(CotforgeError, match="not built yet"):
        mix(recipe, world / "mix")


def test_self_cognition_source(world: Path) -> None:
    spec = Path(__file__).resolve().parents[1] / "recipes" / "self_cognition.yaml"
    recipe = _recipe(world, f"sources:\n  - name: selfcog\n    self_cognition: {spec}\n    quota: 12\n"
                            "    dedup: false\n")
    report = mix(recipe, world / "mix")
    assert report["kept"] == 12
    _, rows = run_query(world / "mix", "SELECT DISTINCT language FROM accepted ORDER BY 1")
    assert {r[0] for r in rows} <= {"en", "zh"}
    _, texts = run_query(world / "mix", "SELECT summary, reasoning FROM accepted")
    assert all("Cotforge-R1" in summary and reasoning == "" for summary, reasoning in texts)


NEAR_RECIPE = """
name: near-under-one-prompt
seed: 3
sources:
  - name: reasoning
    path: samples.jsonl
    {per_prompt}
    select: shortest
dedup:
  exact: true
  near: {{threshold: 0.8}}
"""


@pytest.mark.parametrize("per_prompt", [None, 2])
def test_near_duplicates_under_one_prompt_count_once(tmp_path: Path, per_prompt) -> None:
    """Three responses to one prompt that differ by one word in 120 leave one survivor; per_prompt then
    picks among the distinct responses (here: that one and a genuinely different, longer answer)."""
    base = _text(7, 120).split()
    variants = []
    for k, word in enumerate(["zebra", "walrus", "okapi"]):
        words = list(base)
        words[40 + k] = word  # one word in 120
        variants.append(" ".join(words))
    distinct = _text(11, 125)
    # Each final answer differs: under `text: prompt_summary` equal answers to one prompt are exact duplicates.
    rows = [{"id": f"v{k}", "prompt": "Explain the pattern.", "completion": f"<think>{text}</think>Done ({k})."}
            for k, text in enumerate([*variants, distinct])]
    rows.append({"id": "other", "prompt": "Another prompt.", "completion": f"<think>{variants[0]}</think>Done."})
    write_jsonl(tmp_path / "samples.jsonl", rows)
    recipe = _recipe(tmp_path, NEAR_RECIPE.format(per_prompt=f"per_prompt: {per_prompt}" if per_prompt else ""))
    mix(recipe, tmp_path / "mix")
    listed = {r["id"]: r for r in _rows(tmp_path / "mix")}
    kept = sorted(i for i, r in listed.items() if r["accepted"])
    survivors = [i for i in ("v0", "v1", "v2") if listed[i]["accepted"]]
    assert len(survivors) == 1, listed
    assert "v3" in kept and "other" in kept  # the distinct answer, and the same text under another prompt
    assert kept == sorted([*survivors, "v3", "other"])
    for dropped in {"v0", "v1", "v2"} - set(survivors):
        assert re.fullmatch(rf"near duplicate of {survivors[0]} \(jaccard 0\.\d\d, same prompt\)",
                            listed[dropped]["reason"]), listed[dropped]
