"""One rule for generate's options (cotforge.generate.options): recipe, then explicit options, then the
executor; the library call and the CLI make the same run from the same options."""

from __future__ import annotations

import json

import pytest

from cotforge.generate import GenerateConfig, generate
from cotforge.generate.options import merge_options, resolve
from cotforge.errors import CotforgeError


def write_recipe(path, text):
    path.write_text(text)
    return path


def test_options_override_the_recipe_and_engine_options_merge_key_by_key(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", "prompts: p.jsonl\nout: run\nk: 2\nmax_tokens: 64\n"
                                               "engine: {name: openai, model: m, timeout: 5, base_url: http://a}\n")
    job = resolve(recipe=recipe, k=8, temperature=None, engine_options={"timeout": 9, "extra": True})
    assert job.config.k == 8  # given: wins
    assert job.config.max_tokens == 64  # not given (None): the recipe's
    assert job.config.temperature == GenerateConfig().temperature
    assert job.config.engine == "openai" and job.config.model == "m"
    assert job.config.engine_options == {"timeout": 9, "base_url": "http://a", "extra": True}
    assert job.prompts == str((tmp_path / "p.jsonl").resolve()) and job.out == str((tmp_path / "run").resolve())


def test_explicit_paths_win_over_the_recipe_and_missing_paths_are_one_line(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", "prompts: p.jsonl\nk: 2\n")
    job = resolve("mine.jsonl", tmp_path / "o", recipe=recipe)
    assert (job.prompts, job.out) == ("mine.jsonl", str(tmp_path / "o"))
    with pytest.raises(CotforgeError, match=r"^generate: give PROMPTS and --out"):
        resolve(recipe=recipe)
    with pytest.raises(CotforgeError, match=r"^eval: give PROMPTS"):
        resolve(out="o", command="eval")


def test_base_url_one_is_a_url_many_are_a_fleet():
    one, _ = merge_options(base_url=["http://a"])
    many, _ = merge_options(base_url=["http://a", "http://b"], engine_options={"base_url": "http://old"})
    assert one["engine_options"] == {"base_url": "http://a"}
    assert many["engine_options"] == {"base_url": ["http://a", "http://b"]}  # the flag wins over engine_options


def test_replicas_rule_and_bad_names_are_refused():
    with pytest.raises(CotforgeError, match=r"^--replicas needs --executor ray$"):
        resolve("p", "o", replicas=2)
    with pytest.raises(CotforgeError, match=r"^--replicas 0: must be at least 1$"):
        resolve("p", "o", executor="ray", replicas=0)
    with pytest.raises(CotforgeError, match=r"^--executor 'slurm': choose local or ray$"):
        resolve("p", "o", executor="slurm")
    with pytest.raises(CotforgeError, match=r"unknown option\(s\) kk"):
        resolve("p", "o", kk=3)
    assert resolve("p", "o", executor="ray", replicas=2).replicas == 2


def test_a_config_is_a_base_like_a_recipe(tmp_path):
    job = resolve("p", "o", config=GenerateConfig(k=3, max_tokens=50), max_tokens=70)
    assert (job.config.k, job.config.max_tokens) == (3, 70)
    with pytest.raises(CotforgeError, match="not both"):
        resolve("p", "o", config=GenerateConfig(), recipe=write_recipe(tmp_path / "r.yaml", "k: 1\n"))


@pytest.fixture
def replay_files(tmp_path):
    prompts, recorded = tmp_path / "p.jsonl", tmp_path / "rec.jsonl"
    with prompts.open("w") as p, recorded.open("w") as r:
        for i in range(3):
            p.write(json.dumps({"id": f"q{i}", "prompt": f"What is {i} + 1?", "gold": str(i + 1)}) + "\n")
            for j in range(4):
                answer = i + 1 if j % 2 else i + 7
                r.write(json.dumps({"prompt_id": f"q{i}", "sample_idx": j, "prompt": f"What is {i} + 1?",
                                    "completion": f"<think>adding</think>The answer is \\boxed{{{answer}}}."})
                        + "\n")
    return prompts, recorded


def test_library_and_cli_make_the_same_run_from_the_same_recipe_and_options(cli, replay_files, tmp_path):
    prompts, recorded = replay_files
    recipe = write_recipe(tmp_path / "g.yaml", f"engine: {{name: replay, model: {recorded}}}\nk: 1\n"
                                               "max_rounds: 4\nchecks: format,answer\nshard_age_s: 0.5\n")
    lib = generate(prompts, tmp_path / "lib", recipe=recipe, k=2, max_rounds=2, adaptive=False, jobs=0)
    result = cli("generate", prompts, "--out", tmp_path / "cli", "--recipe", recipe, "--k", "2",
                 "--max-rounds", "2", "--fixed", "--jobs", "0")
    assert result.returncode == 0, result.stderr
    manifests = [json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("lib", "cli")]
    assert manifests[0]["config"] == manifests[1]["config"]  # same resume key: the same run
    assert manifests[0]["config"]["k"] == 2 and manifests[0]["config"]["adaptive"] is False
    assert lib["samples"] == manifests[1]["counts"]["samples"] == 6  # 3 prompts x one fixed round of 2


def test_cli_replicas_without_ray_is_one_line(cli, replay_files, tmp_path):
    prompts, recorded = replay_files
    result = cli("generate", prompts, "--out", tmp_path / "run", "--engine", "replay", "--model", recorded,
                 "--replicas", "2")
    assert result.returncode == 1 and result.stderr.strip() == "--replicas needs --executor ray"
    assert not (tmp_path / "run").exists()
