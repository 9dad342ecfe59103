"""Answer classes for maj@k: a prompt's extracted answers grouped by the answer check's own equivalence.

`1/2`, `0.5` and `\\frac{1}{2}` are one vote because the `answer` check (with the run's options, and the
prompt's answer type: choice letters, numeric tolerance, math) says the one equals the other when
given it as the gold. Answers are clustered greedily in sample order: an answer joins the first
class whose representative (its first answer) it equals, else it starts a class. Identical texts
(after collapsing whitespace) are merged without asking.

Two plain numbers are compared here by the check's own number path (`equivalence.fast`: exact
fractions, no sympy, short strings only). Choice answers are option letters: different letters
differ. Every other pair runs in the check chain's supervised worker pool, never in this process,
so a hostile answer meets the same hard time limit (`timeout_s`) as in the run: a pair the check
cannot decide in time counts as different. Those comparisons are batched by round (each prompt's
next unplaced answer against its current classes), so a run of many prompts pays the pool's start
once, and a run whose answers are all numbers never starts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cotforge.checks.chain import Chain, CheckSpec, parse_specs

CODE_TYPES = ("code",)
FAST_CHARS = 64  # longer answers always go to the pool


def _kind(answer_type: str | None, domain: str | None) -> str:
    return (answer_type or ("code" if domain == "code" else "math")).lower()


class _NumberPath:
    """`equivalence.fast` with the run's answer options: True / False for two plain numbers, else None."""

    def __init__(self, spec: CheckSpec):
        from cotforge.checks.answer.check import AnswerCheck, asks_for_rounding

        self.check = AnswerCheck(**spec.options)
        self.asks_for_rounding = asks_for_rounding

    def equal(self, gold: str, answer: str, prompt: str | None) -> bool | None:
        from cotforge.checks.answer.equivalence import Options, fast, last_side
        from cotforge.checks.answer.extract import final_answer, gold_answer
        from cotforge.checks.answer.normalize import parse_number

        if len(gold) > FAST_CHARS or len(answer) > FAST_CHARS or parse_number(gold) is None \
                or parse_number(answer) is None:
            return None
        check = self.check
        options = Options(tuple(t.strip() for t in check.match_types.split(",") if t.strip()), check.precision,
                          check.strict, check.allow_set_relation, check.max_answer_chars,
                          rounding=check.rounding == "always" or (check.rounding == "prompt"
                                                                  and self.asks_for_rounding(prompt)))
        decided = fast(gold_answer(gold), last_side(final_answer(f"\\boxed{{{answer}}}")), options)
        return None if decided is None else bool(decided.equal)


@dataclass
class _Prompt:
    answer_type: str | None
    prompt: str | None
    domain: str | None
    texts: list[str] = field(default_factory=list)  # distinct answer texts, in order of first occurrence
    class_of_text: dict[int, int] = field(default_factory=dict)  # text index -> class
    representatives: list[int] = field(default_factory=list)  # class -> text index
    next_text: int = 0


def answer_spec(checks: str | list | None) -> CheckSpec:
    """The run's own `answer` check spec (its options and time limit), else the default one."""
    if checks:
        try:
            for spec in parse_specs(checks):
                if spec.name == "answer":
                    return CheckSpec("answer", dict(spec.options), spec.timeout_s)
        except Exception:  # noqa: BLE001 - a preset that no longer resolves: the default answer check
            pass
    return CheckSpec("answer")


def _key(text: str) -> str:
    return " ".join(text.split())


def votable(answer_type: str | None, domain: str | None) -> bool:
    return _kind(answer_type, domain) not in CODE_TYPES


def answer_classes(rows: list[dict], checks: str | list | None = None, jobs: int = 1) -> dict[str, int | None]:
    """Sample id -> answer class within its prompt (None: no answer). `rows`: dicts with id, prompt_id,
    sample_idx, answer, and optionally answer_type, domain, prompt."""
    prompts: dict[str, _Prompt] = {}
    text_index: dict[tuple[str, str], int] = {}
    sample_text: dict[str, tuple[str, int] | None] = {}
    for row in sorted(rows, key=lambda r: (r["prompt_id"], r["sample_idx"])):
        prompt = prompts.setdefault(row["prompt_id"], _Prompt(row.get("answer_type"), row.get("prompt"),
                                                              row.get("domain")))
        answer = row.get("answer")
        if answer is None or not str(answer).strip():
            sample_text[row["id"]] = None
            continue
        key = (row["prompt_id"], _key(str(answer)))
        if key not in text_index:
            text_index[key] = len(prompt.texts)
            prompt.texts.append(str(answer))
        sample_text[row["id"]] = (row["prompt_id"], text_index[key])
    _cluster(prompts, answer_spec(checks), jobs)
    return {sid: None if where is None else prompts[where[0]].class_of_text[where[1]]
            for sid, where in sample_text.items()}


def _cluster(prompts: dict[str, _Prompt], spec: CheckSpec, jobs: int) -> None:
    chain: Chain | None = None
    numbers = _NumberPath(spec)
    try:
        while True:
            # Place every prompt's next answer that has no class yet: the first one of a prompt starts
            # its first class; later ones are compared with every class so far, in one batch.
            pairs: list[tuple[_Prompt, int, int]] = []  # (prompt, text index, class)
            for prompt in prompts.values():
                while prompt.next_text < len(prompt.texts) and not prompt.representatives:
                    prompt.class_of_text[prompt.next_text] = 0
                    prompt.representatives.append(prompt.next_text)
                    prompt.next_text += 1
                if prompt.next_text < len(prompt.texts):
                    pairs += [(prompt, prompt.next_text, cls) for cls in range(len(prompt.representatives))]
            if not pairs:
                return
            equal: list[bool | None] = []
            for p, text, cls in pairs:
                kind, gold, answer = _kind(p.answer_type, p.domain), p.texts[p.representatives[cls]], p.texts[text]
                if kind == "choice":
                    equal.append(_key(gold) == _key(answer))  # option letters
                else:
                    equal.append(numbers.equal(gold, answer, p.prompt) if kind == "math" else None)
            asked = [i for i, value in enumerate(equal) if value is None]
            if asked:
                if chain is None:
                    chain = Chain([spec], jobs=max(1, jobs), allow_unverified=None)
                samples = [{"gold": pairs[i][0].texts[pairs[i][0].representatives[pairs[i][2]]],
                            "completion": f"\\boxed{{{pairs[i][0].texts[pairs[i][1]]}}}",
                            "answer_type": pairs[i][0].answer_type, "domain": pairs[i][0].domain,
                            "prompt": pairs[i][0].prompt} for i in asked]
                for i, result in zip(asked, chain.run(samples)):
                    equal[i] = result.verdicts[0].passed and result.verdicts[0].score is not None
            placed: set[int] = set()
            for (prompt, text, cls), same in zip(pairs, equal):
                if id(prompt) in placed or not same:
                    continue
                prompt.class_of_text[text] = cls  # the first (oldest) class it equals
                placed.add(id(prompt))
            for prompt, text, _ in pairs:
                if text not in prompt.class_of_text:  # equal to none: a class of its own
                    prompt.class_of_text[text] = len(prompt.representatives)
                    prompt.representatives.append(text)
                prompt.next_text = max(prompt.next_text, text + 1)
    finally:
        if chain is not None:
            chain.close()
