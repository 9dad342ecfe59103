"""`language`: one language per sample, mixing caught both ways and inside sentences; formulas, code and
quotes not counted; its score is R1's language-consistency reward."""

from __future__ import annotations

import socket

import pytest

from cotforge.checks import create
from cotforge.checks.language import detect_language, lid_model, sentences, strip_non_language

EN_REASONING = (
    "First, I need to find how many eggs Janet has left each day. She lays 16 eggs and uses 3 for "
    "breakfast and 4 for the muffins.\n"
    "So the remainder is $16 - 3 - 4 = 9$ eggs. Each egg sells for $2, which means she earns "
    "\\(9 \\times 2 = 18\\) dollars.\n"
    "Let me double-check the arithmetic. Three plus four is seven, and sixteen minus seven is nine. "
    "Nine times two is eighteen, so the answer should be eighteen dollars per day."
)
ZH_REASONING = (
    "首先，我们需要计算小明一共买了多少个苹果。他第一天买了 $3$ 个，第二天买了 $2 \\times 3 = 6$ 个。\n"
    "所以两天一共是 3 + 6 = 9 个苹果。接下来，我们要算出他吃掉之后还剩多少。\n"
    "他每天吃 2 个，连续吃了 3 天，所以吃掉了 6 个。因此剩下 9 - 6 = 3 个。\n"
    "我们再检查一下：第一天 3 个，第二天 6 个，合计 9 个，吃掉 6 个，剩 3 个，没有问题。"
)
EN_PROMPT = "Janet's ducks lay 16 eggs per day. She eats three for breakfast. How much does she make?"
ZH_PROMPT = "小明第一天买了3个苹果，第二天买的是第一天的两倍。他每天吃2个，吃了3天，还剩多少个？"


def judge(reasoning: str, summary: str, prompt: str = "", language: str | None = None, **options):
    return create("language", **options).check(
        {"reasoning": reasoning, "summary": summary, "prompt": prompt, "language": language})


def test_english_reasoning_for_an_english_prompt_passes():
    verdict = judge(EN_REASONING, "The answer is 18.", EN_PROMPT)
    assert verdict.passed and verdict.score == 1.0, verdict
    assert "in en (prompt)" in verdict.reason


def test_chinese_reasoning_for_a_chinese_prompt_passes():
    verdict = judge(ZH_REASONING, "答案是 3 个。", ZH_PROMPT)
    assert verdict.passed and verdict.score == 1.0, verdict
    assert "in zh" in verdict.reason


def test_chinese_reasoning_with_english_sentences_fails():
    mixed = ZH_REASONING + ("\nWait, let me double check the second day again because the problem "
                            "says twice as many apples.\n所以答案是 3 个。")
    verdict = judge(mixed, "答案是 3 个。", ZH_PROMPT)
    assert not verdict.passed, verdict
    assert "foreign run(s) (en)" in verdict.reason and 0.7 < verdict.score < 0.9


@pytest.mark.parametrize(("sentence", "code"), [
    ("Donc le revenu quotidien est de dix-huit dollars pour les oeufs vendus au marché.", "fr"),
    ("Also muss sie jeden Tag die restlichen Eier auf dem Markt verkaufen, und das ergibt den Betrag.", "de"),
])
def test_english_reasoning_with_a_french_or_german_sentence_fails(sentence, code):
    verdict = judge(EN_REASONING + "\n" + sentence, "The answer is 18.", EN_PROMPT)
    assert not verdict.passed, verdict
    assert f"foreign run(s) ({code})" in verdict.reason


def test_english_reasoning_for_a_chinese_prompt_fails():
    verdict = judge(EN_REASONING, "The answer is 18.", ZH_PROMPT)
    assert not verdict.passed and verdict.score == 0.0, verdict


def test_expected_language_field_wins_over_the_prompt():
    verdict = judge(ZH_REASONING, "答案是 3 个。", EN_PROMPT, language="zh-CN")
    assert verdict.passed and "(expected)" in verdict.reason, verdict


def test_formulas_latex_numbers_and_code_are_not_language():
    stripped = strip_non_language("所以 $\\frac{a}{b} = 3$，且 `total_count = len(items)`，x2 = 4.5 km。")
    assert "frac" not in stripped and "total_count" not in stripped and "4.5" not in stripped
    # An English-heavy formula inside Chinese reasoning does not make it mixed.
    reasoning = ZH_REASONING + ("\n代入公式 $\\text{area} = \\text{width} \\times \\text{height}$，"
                                "再调用 `compute_total_price(items)` 检查结果。")
    assert judge(reasoning, "答案是 3 个。", ZH_PROMPT).passed


def test_short_english_fragments_are_not_judged():
    # "So x = 5." and "OK." have too few words to tell a language from; they neither count nor fail.
    judged = [s for s in sentences("所以 x = 5。\nOK.\n我们继续计算下一步。")]
    assert judged and judge("所以 x = 5。\nOK.\n我们继续计算下一步。", "答案是 5。", ZH_PROMPT).passed


def test_gsm8k_solutions_are_english(shared_dir):
    import json

    rows = [json.loads(line) for line in (shared_dir / "data" / "gsm8k" / "test.jsonl").open()][:300]
    check = create("language")
    failed = [r["answer"] for r in rows
              if not check.check({"reasoning": r["answer"], "summary": "", "prompt": r["question"]}).passed]
    assert len(failed) <= 3, failed[:3]


def test_prompt_language_detection():
    assert detect_language(EN_PROMPT) == "en"
    assert detect_language(ZH_PROMPT) == "zh"


def test_model_loads_from_the_installed_wheel_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    lid_model.cache_clear()
    labels, _ = lid_model().predict("Das ist eine ganz normale deutsche Satzstruktur.", k=1)
    assert labels[0] == "__label__de"


# words, not sentences: mixing inside a sentence

def test_a_chinese_phrase_inside_an_english_sentence_fails():
    # the shape of R1's mixing: one phrase dropped into an otherwise English sentence
    mixed = EN_REASONING + ("\nRaising the tariff might also lead to economic结构调整 issues, political "
                            "tension and slower growth, so the answer should still be eighteen dollars.")
    verdict = judge(mixed, "The answer is 18.", EN_PROMPT)
    assert not verdict.passed, verdict
    assert verdict.score > 0.95  # one phrase is a small share of the words ...
    assert "1 > 0 foreign runs" in verdict.reason and "economic结构调整 issues" in verdict.reason  # ... but it counts
    # a lenient preset may tolerate a few runs; the share still reflects them
    assert judge(mixed, "The answer is 18.", EN_PROMPT, max_foreign_runs=2).passed


def test_english_words_inside_chinese_sentences_count():
    mixed = ZH_REASONING + "\n所以我们需要 double check 一下第二天的数量，确认没有算错。"
    verdict = judge(mixed, "答案是 3 个。", ZH_PROMPT)
    assert not verdict.passed and "(en)" in verdict.reason, verdict
    # acronyms and one-letter symbols are not words of another language
    assert judge(ZH_REASONING + "\n我们用 GPU 算出 x 的值。", "答案是 3 个。", ZH_PROMPT).passed


def test_quoted_text_math_and_code_are_not_mixing():
    quoted = EN_REASONING + ('\nThe problem calls the market "农贸市场" in the original, and the sign reads '
                             "“每个两美元”, which matches the price.")
    assert judge(quoted, "The answer is 18.", EN_PROMPT).passed
    code = EN_REASONING + "\nIn code this is `剩余 = 16 - 3 - 4` and in math $\\text{收入} = 9 \\times 2$."
    assert judge(code, "The answer is 18.", EN_PROMPT).passed
    # a foreign word the prompt itself contains is cited, not mixed in
    prompt = EN_PROMPT + " (The market is called 集市.)"
    assert judge(EN_REASONING + "\nShe sells them at the 集市 every morning.", "The answer is 18.", prompt).passed


def test_greek_letters_are_math_symbols():
    text = EN_REASONING + "\nThe angle θ is 30 degrees, and the area is πr squared for the circle."
    assert judge(text, "The answer is 18.", EN_PROMPT).passed


def test_the_score_is_the_share_of_target_words_and_the_reward_is_the_score():
    from cotforge.train import rewards
    from cotforge.checks.language import tally

    mixed = "This sentence has eight English words in it. 这是中文句子"  # 6 CJK chars = 3 words
    counted = tally(mixed, "en", 3)
    assert counted.target_words == 8 and counted.total_words == 11
    verdict = judge(mixed, "", EN_PROMPT, min_share=0.0, max_foreign_runs=None)
    assert verdict.passed and verdict.score == pytest.approx(8 / 11)
    scores = rewards.language(prompts=[EN_PROMPT, EN_PROMPT],
                              completions=[f"<think>{mixed}</think>", f"<think>{EN_REASONING}</think> It is 18."])
    assert scores[0] == pytest.approx(8 / 11) and scores[1] == 1.0


def test_real_traces_are_english(real_traces):
    """Clean, finished English traces written by Sky-T1 (QwQ-distilled) models: none is mixed."""
    check = create("language")
    finished = [row for row in real_traces if row["finished"]]
    failed = [(row["id"], v.reason) for row in finished
              if not (v := check.check({"completion": row["completion"], "prompt": row["prompt"]})).passed]
    print(f"\nlanguage on {len(finished)} finished real traces: {len(failed)} rejected")
    assert len(finished) >= 50 and len(failed) <= len(finished) // 50, failed[:3]


# An English reasoning that translates or explains Chinese source text it quotes (the source is not in
# the prompt, so nothing is "cited" from it): quoted material is not language mixing.
POEM_PROMPT = "What does the first line of Li Bai's poem Quiet Night Thought mean? Explain it in English."
POEM = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
EXPLAINED = "The first line means bright moonlight before my bed, and the poet mistakes it for frost on the ground."


@pytest.mark.parametrize("quoted", [
    f"The poem reads “{POEM}”",  # curly double quotes
    f"The poem reads 「{POEM}」",  # CJK corner brackets
    f"The poem reads 『{POEM}』",
    "The poem is titled 《静夜思》 in Chinese",  # book-title marks
    "The key word 〈明月〉 is the bright moon",
    f"The poem reads ＂{POEM}＂",  # full-width straight quotes
    f'The poem reads "{POEM[:12]}\n{POEM[12:]}" over two lines',  # straight quotes across a line break
    f"The poem reads:\n\n> {POEM[:12]}\n> {POEM[12:]}\n",  # a Markdown blockquote
    f"The poem reads “{POEM * 40}”",  # a long passage, well past a phrase (960 characters)
    f"In code the line is `{POEM[:5]}`",
])
def test_quoted_foreign_sentences_are_not_mixing(quoted):
    verdict = judge(f"{quoted}. {EXPLAINED} Each line has five characters.", "It means moonlight before the bed.",
                    POEM_PROMPT, "en")
    assert verdict.passed, verdict.reason


@pytest.mark.parametrize("mixed", [
    f"The poem reads {POEM[:5]}",  # the same words, unquoted: mixing
    f'A "quote" here.\n\nThen {POEM[:5]} is mixed in, and the poet "sees" the light',  # quotes are per paragraph
    f"The poem reads “{POEM}” and then 明月 again outside the quotes",
])
def test_unquoted_foreign_text_is_still_mixing(mixed):
    verdict = judge(f"{mixed}. {EXPLAINED} Each line has five characters.", "It means moonlight before the bed.",
                    POEM_PROMPT, "en")
    assert not verdict.passed and "zh" in verdict.reason, verdict.reason


def test_a_quoted_english_sentence_in_a_chinese_reasoning_is_not_mixing():
    reasoning = ZH_REASONING + "\n题目里的原句是 “Janet's ducks lay 16 eggs per day. She eats three for breakfast.”，意思已经清楚了。"
    assert judge(reasoning, "答案是 3 个。", ZH_PROMPT).passed
