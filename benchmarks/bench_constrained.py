"""Decode speed with and without a JSON-schema grammar processor, on the bundled model.

Run: `uv run python benchmarks/bench_constrained.py [--tokens 64] [--repeats 3]`.
Prints a Markdown table and writes benchmarks/out/constrained.json.

Every path decodes the same prompt greedily for exactly --tokens tokens with
mlx-lm's `generate_step` (which does not stop at EOS). The schema's one string
field has a minLength far beyond --tokens, so the grammar stays open for the
whole run and every step is a constrained one. Paths:

- unconstrained: no logits processor (mlx-lm pipelines step N+1's graph while
  step N evaluates);
- sync only: a processor that just reads the previous token, which any grammar
  processor must do (it isolates the cost of waiting for that token);
- json_schema: `app.engine.constrained.json_processor`; its own CPU time per
  token (feeding the matcher, computing the mask, building the masked logits)
  is measured separately.

Decode tok/s counts from the first generated token to the last, so prefill is
excluded; paths are interleaved per repeat. Overhead is per-token time relative
to unconstrained, from the medians and from the best runs (the best run is the
steadier figure when other work shares this 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx.core as mx  # noqa: E402
import mlx_lm  # noqa: E402
from mlx_lm.generate import generate_step  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402

from app.engine.bundled import ensure_bundled_model  # noqa: E402
from app.engine.constrained import GrammarProcessor, json_grammar  # noqa: E402

MESSAGES = [
    {"role": "system", "content": 'Reply with a JSON object: {"story": "..."}.'},
    {"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."},
]
SCHEMA = {
    "type": "object",
    "properties": {"story": {"type": "string", "minLength": 5000}},
    "required": ["story"],
    "additionalProperties": False,
}
OUT = Path(__file__).resolve().parent / "out" / "constrained.json"


class SyncOnly:
    """Reads the newest context token, as a grammar processor must, and changes nothing."""

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        tokens[-1].item()
        return logits


class TimedGrammar(GrammarProcessor):
    """A GrammarProcessor that adds up its own CPU time, not the wait for the previous token."""

    cpu_s = 0.0
    calls = 0

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        mx.eval(tokens)  # the wait for the previous step; the sync-only path measures it
        start = time.perf_counter()
        out = super().__call__(tokens, logits)
        self.cpu_s += time.perf_counter() - start
        self.calls += 1
        return out


@dataclass
class Row:
    path: str
    decode_tps: float
    overhead_pct: float
    best_tps: float
    best_overhead_pct: float
    processor_us_per_token: float | None
    runs: list[float]


def _decode_tps(model, prompt: mx.array, n: int, processors: list) -> float:
    greedy = make_sampler(temp=0.0)
    times = []
    for _ in generate_step(prompt, model, max_tokens=n, sampler=greedy, logits_processors=processors):
        times.append(time.perf_counter())
    return (len(times) - 1) / (times[-1] - times[0])


def run(n: int, repeats: int, models: Path) -> list[Row]:
    model, tokenizer = mlx_lm.load(str(ensure_bundled_model(models)))
    prompt = mx.array(tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True))
    grammar = json_grammar(SCHEMA)
    _decode_tps(model, prompt, 8, [])  # warm-up
    tps: dict[str, list[float]] = {"unconstrained": [], "sync only": [], "json_schema": []}
    cpu_us: list[float] = []
    for _ in range(repeats):
        tps["unconstrained"].append(_decode_tps(model, prompt, n, []))
        tps["sync only"].append(_decode_tps(model, prompt, n, [SyncOnly()]))
        proc = TimedGrammar(tokenizer, grammar, param="response_format")
        tps["json_schema"].append(_decode_tps(model, prompt, n, [proc]))
        assert proc.active, "the grammar processor gave up"
        cpu_us.append(proc.cpu_s / proc.calls * 1e6)
    base, base_best = statistics.median(tps["unconstrained"]), max(tps["unconstrained"])
    rows = []
    for path, runs in tps.items():
        median, best = statistics.median(runs), max(runs)
        cpu = statistics.median(cpu_us) if path == "json_schema" else None
        rows.append(
            Row(path, median, (base / median - 1) * 100, best, (base_best / best - 1) * 100, cpu, runs)
        )
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| path | decode tok/s (median) | overhead | best tok/s | overhead (best) "
        "| processor CPU µs/token |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu = f"{r.processor_us_per_token:.0f}" if r.processor_us_per_token is not None else "–"
        lines.append(
            f"| {r.path} | {r.decode_tps:.2f} | {r.overhead_pct:+.1f}% | {r.best_tps:.2f} "
            f"| {r.best_overhead_pct:+.1f}% | {cpu} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--models-dir", type=Path, default=None, help="where to convert the bundled model"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(args.tokens, args.repeats, args.models_dir or Path(tmp))
    print(f"{platform.machine()} {platform.system()}, MLX {mx.__version__}, {args.tokens} tokens, "
          f"median of {args.repeats}\n")
    print(table(rows))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
