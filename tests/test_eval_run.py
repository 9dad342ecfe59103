"""`cotforge eval`, `eval --compare`, `select` and the mix's `pass_rate` for real through the replay engine
(recorded completions with known answers: the metrics are known by hand)."""

from __future__ import annotations

import json
import re

import pytest

from cotforge.engines.replay import ReplayEngine
from cotforge.evaluation import compare_runs, evaluate, select_prompts
from cotforge.generate import generate
from cotforge.errors import CotforgeError
from cotforge.query import run_query

N = 4


def completion(answer) -> str:
    return f"<think>adding it up</think>The answer is $\\boxed{{{answer}}}$."


def write_recorded(tmp_path, name, answers_for):
    """Prompts q0..q4 (q4 without gold); `answers_for(i)` gives prompt i's recorded answers in order."""
    prompts, recorded = tmp_path / "prompts.jsonl", tmp_path / f"{name}.jsonl"
    with prompts.open("w") as p, recorded.open("w") as r:
        for i in range(5):
            row = {"id": f"q{i}", "prompt": f"What is {i} + {i}?", "source": "easy" if i < 2 else "hard"}
            if i < 4:
                row["gold"] = str(2 * i)
            p.write(json.dumps(row) + "\n")
            for j, answer in enumerate(answers_for(i)):
                text = completion(answer) if answer is not None else "<think>I keep going and going"
                r.write(json.dumps({"prompt_id": f"q{i}", "prompt": row["prompt"], "sample_idx": j,
                                    "completion": text}) + "\n")
    return prompts, recorded


def base_answers(i):
    """q0: right first then wrong (generate would stop at sample 0); q1: 1 of 4 right, written as a
    fraction; q2: none right, no answer twice; q3: all right, one as `6.0`; q4: no gold."""
    return {0: [0, 5, 5, 5], 1: [7, 7, "4/2", 9], 2: [None, 3, None, 3], 3: [6, "6.0", 6, 6],
            4: [1, 1, 1, 1]}[i]


def tuned_answers(i):
    return {0: [0, 0, 0, 0], 1: [2, 2, 7, 2], 2: [4, 4, 3, 4], 3: [6, 6, 6, 6], 4: [1, 1, 1, 1]}[i]


@pytest.fixture
def files(tmp_path):
    prompts, base = write_recorded(tmp_path, "base", base_answers)
    _, tuned = write_recorded(tmp_path, "tuned", tuned_answers)
    return prompts, base, tuned


def run_eval(prompts, recorded, out, **options):
    return evaluate(prompts, out, N, engine="replay", model=str(recorded), jobs=0, shard_age_s=0.2, **options)


def test_eval_draws_exactly_n_per_prompt_and_the_metrics_are_the_hand_computed_ones(files, tmp_path):
    prompts, base, _ = files
    summary = run_eval(prompts, base, tmp_path / "run")
    _, counts = run_query(tmp_path / "run", "SELECT prompt_id, count(*), min(sample_idx), max(sample_idx) "
                                            "FROM samples GROUP BY prompt_id ORDER BY prompt_id")
    assert counts == [(f"q{i}", N, 0, N - 1) for i in range(5)]  # q0's first accepted sample stopped nothing
    overall = summary["metrics"]["overall"]
    assert overall["prompts"] == 4 and summary["eval"]["unverifiable_prompts"] == 1  # q4 has no gold
    rates = [1 / 4, 1 / 4, 0, 1]
    assert overall["pass@1"] == pytest.approx(sum(rates) / 4)
    assert overall["pass@2"] == pytest.approx((0.5 + 0.5 + 0 + 1) / 4)
    assert overall["pass@4"] == pytest.approx(3 / 4)
    # maj@4: q0 5 wins (wrong); q1 7 wins (wrong); q2 3 wins 2-2 over no answer? no answer came first: wrong;
    # q3 6 and 6.0 are one class (right)
    assert overall["maj@4"] == pytest.approx(1 / 4)
    # maj@2: q0 tie 0/5 -> 0 first (right); q1 7 (wrong); q2 tie none/3 -> none first (wrong); q3 right
    assert overall["maj@2"] == pytest.approx(2 / 4)
    assert overall["truncated"] == 0 and overall["stopped"] == 0
    assert summary["metrics"]["by_source"]["easy"]["pass@1"] == pytest.approx(0.25)
    assert summary["metrics"]["by_source"]["hard"]["pass@4"] == pytest.approx(0.5)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["command"] == "eval" and manifest["status"] == "complete"
    assert manifest["metrics"]["overall"] == overall
    _, rows = run_query(tmp_path / "run", "SELECT value FROM metrics WHERE scope = 'overall' AND metric = 'maj@4'")
    assert rows == [(pytest.approx(0.25),)]


def test_a_killed_eval_resumes_to_the_same_samples_and_metrics(files, tmp_path):
    prompts, base, _ = files

    class Crashing(ReplayEngine):
        calls = 0

        def generate(self, requests, params):
            Crashing.calls += 1
            if Crashing.calls > 2:
                raise KeyboardInterrupt
            return super().generate(requests, params)

    reference = evaluate(prompts, tmp_path / "ref", N, engine=ReplayEngine(base), jobs=0, shard_size=N)
    with pytest.raises(KeyboardInterrupt):
        evaluate(prompts, tmp_path / "run", N, engine=Crashing(base), jobs=0, shard_size=N, concurrency=N)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "running" and "metrics" not in manifest
    resumed = evaluate(prompts, tmp_path / "run", N, engine=ReplayEngine(base), jobs=0, shard_size=N)
    query = "SELECT id, completion, accepted FROM samples ORDER BY id"
    assert run_query(tmp_path / "run", query) == run_query(tmp_path / "ref", query)
    assert resumed["metrics"] == reference["metrics"]


def test_cli_eval_table_json_keys_compare_and_one_line_errors(cli, files, tmp_path):
    prompts, base, tuned = files
    common = ["--n", str(N), "--engine", "replay", "--jobs", "0"]
    result = cli("eval", prompts, "--out", tmp_path / "a", "--model", base, "--json", tmp_path / "a.json", *common)
    assert result.returncode == 0, result.stderr
    header, overall = result.stdout.splitlines()[:2]
    assert header.split()[:9] == ["split", "prompts", "n", "pass@1", "pass@2", "pass@4", "maj@2", "maj@4", "pass@1"]
    assert overall.split()[:8] == ["overall", "4", "4", "37.5", "50.0", "75.0", "50.0", "25.0"]
    assert "1 prompts had no gold answer" in result.stdout
    data = json.loads((tmp_path / "a.json").read_text())
    assert list(data) == ["overall", "by_source", "by_domain"]
    assert {"prompts", "n", "pass@1", "pass@2", "pass@4", "maj@4", "pass@1_ci", "mean_tokens"} <= set(data["overall"])
    low, high = data["overall"]["pass@1_ci"]
    assert low <= data["overall"]["pass@1"] <= high

    assert cli("eval", prompts, "--out", tmp_path / "b", "--model", tuned, *common).returncode == 0
    compared = cli("eval", "--compare", tmp_path / "a", tmp_path / "b", "--json", tmp_path / "cmp.json")
    assert compared.returncode == 0, compared.stderr
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    # tuned rates: q0 1, q1 3/4, q2 3/4, q3 1 against 1/4, 1/4, 0, 1
    assert cmp["metrics"]["pass@1"]["diff"] == pytest.approx((0.75 + 0.5 + 0.75) / 4)
    assert [row["prompt_id"] for row in cmp["differ_most"]] == ["q0", "q2", "q1"]
    assert "q0: 25.0 -> 100.0" in compared.stdout



def test_a_recipe_gives_engine_options_but_not_its_sampling_policy(files, tmp_path):
    prompts, base, _ = files
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"engine: {{name: replay, model: {base}}}\nk: 1\naccept: 1\nmax_rounds: 3\nchecks: format\n")
    evaluate(prompts, tmp_path / "d", 2, recipe=recipe, jobs=0)
    _, counts = run_query(tmp_path / "d", "SELECT DISTINCT count(*) FROM samples GROUP BY prompt_id")
    assert counts == [(2,)]  # the recipe's k, accept and rounds are generate's: not used
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["config"]["engine"] == "replay" and manifest["config"]["checks"] == "eval"
    with pytest.raises(CotforgeError, match=r"--accept belong to generate"):
        evaluate(prompts, tmp_path / "e", N, engine="replay", model=str(base), accept=1)


def test_compare_refuses_runs_with_no_prompt_in_common(files, tmp_path):
    prompts, base, _ = files
    run_eval(prompts, base, tmp_path / "a")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "zz", "prompt": "What is 0 + 0?", "gold": "0"}) + "\n")
    recorded = tmp_path / "zz.jsonl"
    recorded.write_text("".join(json.dumps({"prompt_id": "zz", "prompt": "What is 0 + 0?", "sample_idx": j,
                                            "completion": completion(0)}) + "\n" for j in range(N)))
    run_eval(other, recorded, tmp_path / "b")
    with pytest.raises(CotforgeError, match="share no prompt ids"):
        compare_runs(tmp_path / "a", tmp_path / "b")


def test_select_from_an_eval_run_and_a_generate_run(files, tmp_path):
    prompts, base, _ = files
    run_eval(prompts, base, tmp_path / "eval")
    result = select_prompts(tmp_path / "eval", "0.1:0.9", tmp_path / "mid.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "mid.jsonl").read_text().splitlines()]
    assert [(r["id"], r["pass_rate"], r["samples"]) for r in rows] == [("q0", 0.25, 4), ("q1", 0.25, 4)]
    assert rows[0]["gold"] == "0" and rows[0]["source"] == "easy" and result["prompts"] == 4
    select_prompts(tmp_path / "eval", "0:0", tmp_path / "none.jsonl")
    assert [json.loads(line)["id"] for line in (tmp_path / "none.jsonl").read_text().splitlines()] == ["q2"]
    # a generate run: pass rates over the samples it drew (it stops q0 at its first accepted sample)
    generate(prompts, tmp_path / "gen", engine="replay", model=str(base), k=1, max_rounds=4, accept=1,
             adaptive=False, checks="format,answer", jobs=0)
    select_prompts(tmp_path / "gen", "0.5:1", tmp_path / "solved.jsonl")
    solved = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "solved.jsonl").read_text().splitlines()}
    assert solved["q0"]["samples"] == 1 and solved["q0"]["pass_rate"] == 1.0 and "q2" not in solved
    # the selected file is a prompt file again: its pass rate travels in metadata
    again = run_eval(tmp_path / "mid.jsonl", base, tmp_path / "again")
    assert again["metrics"]["overall"]["prompts"] == 2
    with pytest.raises(CotforgeError, match=r"--pass-rate '0.9:0.1': needs 0 <= LO <= HI <= 1"):
        select_prompts(tmp_path / "eval", "0.9:0.1", tmp_path / "x.jsonl")
    with pytest.raises(CotforgeError, match=r"give LO:HI"):
        select_prompts(tmp_path / "eval", "half", tmp_path / "x.jsonl")


def test_select_refuses_an_unfinished_run_unless_allow_partial(files, tmp_path):
    prompts, base, _ = files
    run_eval(prompts, base, tmp_path / "eval")
    manifest = tmp_path / "eval" / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "status": "running"}))
    with pytest.raises(CotforgeError, match="unfinished eval run"):
        select_prompts(tmp_path / "eval", "0:1", tmp_path / "x.jsonl")
    assert select_prompts(tmp_path / "eval", "0:1", tmp_path / "x.jsonl", allow_partial=True)["selected"] == 4


def test_mix_keeps_a_sources_prompts_by_pass_rate(files, tmp_path):
    from cotforge.mix import mix

    prompts, base, _ = files
    run_eval(prompts, base, tmp_path / "eval")
    recipe = tmp_path / "mix.yaml"
    recipe.write_text("name: m\nseed: 0\nsources:\n  - name: ev\n    path: eval\n    pass_rate: [0.1, 0.9]\n"
                      "dedup: {exact: false}\n")
    mix(recipe, tmp_path / "mix")
    _, rows = run_query(tmp_path / "mix", "SELECT prompt_id, count(*) FROM accepted GROUP BY prompt_id ORDER BY 1")
    assert rows == [("q0", 1), ("q1", 1)]  # q3 (rate 1) and q2 (rate 0) left out; one right sample each
    recipe.write_text("name: m\nsources:\n  - name: ev\n    path: eval\n    pass_rate: [0.9, 0.1]\n")
    with pytest.raises(CotforgeError, match=r"source 'ev': pass_rate must be \[LO, HI\]"):
        mix(recipe, tmp_path / "mix2")
    recipe.write_text(f"name: m\nsources:\n  - name: f\n    path: {base}\n    pass_rate: [0.1, 0.9]\n")
    with pytest.raises(CotforgeError, match="pass_rate needs a run folder"):
        mix(recipe, tmp_path / "mix3")


def test_view_and_report_show_the_metrics_and_the_pass_at_k_plot(files, tmp_path):
    from starlette.testclient import TestClient

    from cotforge.view.app import ViewApp
    from cotforge.view.report import build_report

    prompts, base, _ = files
    run_eval(prompts, base, tmp_path / "run")
    page = TestClient(ViewApp([tmp_path / "run"]).asgi(allowed_hosts=["testserver"])).get("/run/0").text
    build_report(tmp_path / "run", tmp_path / "r.html")
    for html in (page, (tmp_path / "r.html").read_text()):
        assert "Eval metrics" in html
        row = re.search(r"<tr><td>overall</td>(.*?)</tr>", html, re.S).group(1)
        cells = re.findall(r'<td class="n">([^<]*)</td>', row)
        assert cells[:6] == ["4", "37.5%", "50.0%", "75.0%", "50.0%", "25.0%"]  # pass@1, 2, 4, maj@2, 4
        svg = re.search(r"<svg.*?</svg>", html, re.S).group(0)
        assert svg.count("<polyline") == 2 and "pass@k k=4: 75.0%" in svg and "maj@k k=2: 50.0%" in svg
        assert "source = easy" in html
    # a generate run has no eval section
    generate(prompts, tmp_path / "gen", engine="replay", model=str(base), k=1, checks="format,answer", jobs=0)
    assert "Eval metrics" not in TestClient(ViewApp([tmp_path / "gen"]).asgi(allowed_hosts=["testserver"])).get(
        "/run/0").text
