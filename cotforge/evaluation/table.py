"""Eval results as terminal tables."""

from __future__ import annotations


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def metric_names(values: dict) -> list[str]:
    return [k for k in values if k.startswith(("pass@", "maj@")) and not k.endswith("_ci")]


def format_metrics(metrics: dict) -> str:
    """One row per split (overall, each source, each domain); metrics in percent."""
    overall = metrics["overall"]
    if not overall.get("prompts"):
        return "no prompts with verifiable samples"
    names = metric_names(overall)
    header = ["split", "prompts", "n", *names, "pass@1 95% CI", "tokens", "trunc%", "stop%"]
    rows = []
    splits = [("overall", overall)]
    for scope in ("source", "domain"):
        groups = metrics.get(f"by_{scope}", {})
        if len(groups) > 1:
            splits += [(f"{scope}={name}", values) for name, values in groups.items()]
    for label, values in splits:
        low, high = values.get("pass@1_ci", [None, None])
        tokens = values.get("mean_tokens")
        rows.append([label, str(values["prompts"]), str(values["n"]), *(_pct(values.get(n)) for n in names),
                     f"[{_pct(low)}, {_pct(high)}]", "-" if tokens is None else f"{tokens:.0f}",
                     _pct(values.get("truncated")), _pct(values.get("stopped"))])
    return _grid(header, rows)


def format_comparison(result: dict, run_a, run_b) -> str:
    lines = [f"B = {run_b} against A = {run_a}: {result['prompts']} shared prompts (n = {result.get('n')}), "
             f"{result['only_a']} only in A, {result['only_b']} only in B; differences B - A in points, "
             f"95% paired bootstrap CI"]
    rows = [[name, _pct(m["a"]), _pct(m["b"]), f"{100 * m['diff']:+.1f}", f"[{100 * m['ci'][0]:+.1f}, "
             f"{100 * m['ci'][1]:+.1f}]"] for name, m in result["metrics"].items()]
    lines.append(_grid(["metric", "A", "B", "B - A", "95% CI"], rows))
    if result["differ_most"]:
        lines.append("prompts that differ most (pass rate A -> B):")
        for row in result["differ_most"]:
            text = " ".join((row["prompt"] or "").split())
            text = text if len(text) <= 70 else text[:67] + "..."
            lines.append(f"  {row['prompt_id']}: {_pct(row['a'])} -> {_pct(row['b'])}  {text}")
    return "\n".join(lines)


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), *(line(r) for r in rows)])
