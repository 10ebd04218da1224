"""Parameters and traffic per round per client for every method and variant, on the packaged MiniLM.

    python benchmarks/bench_communication.py

Runs examples/smoke.toml (4 clients, 3 rounds) once per method/variant and prints one JSON line each:
trainable parameters, numbers sent down + up per client in the last round, and bytes per client per round.
"""

from __future__ import annotations

from pathlib import Path

from common import emit

from fedtreelora.config import load_config
from fedtreelora.methods import REGISTRY, options_for
from fedtreelora.runtime.embedded import run

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [
    *[[f"method={name}"] for name in sorted(REGISTRY)],
    ["method=ffa", "ffa.rank_factor=2"],
    *[[f"fedtreelora.interaction={v}"] for v in ("isolationist", "decomposed", "router")],
]


def main() -> None:
    for sets in VARIANTS:
        res = run(load_config(ROOT / "examples" / "smoke.toml", sets, options_for()))
        n, rounds = len(res["clients"]), len(res["rounds"])
        traffic = res["communication"]
        emit(
            run=" ".join(sets),
            trainable=res["params"]["trainable"],
            communicated_per_round=res["params"]["communicated_per_round"],
            bytes_per_client_per_round=(traffic["upload_bytes"] + traffic["download_bytes"]) // (n * rounds),
            k_per_layer=res["topology"]["k_per_layer"] if res["topology"] else None,
        )


if __name__ == "__main__":
    main()
