"""Export: a client's personalised model as a PEFT adapter gives the framework's own logits."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from fedtreelora.config import load_config
from fedtreelora.export import ExportError, export_client
from fedtreelora.federation import prepare
from fedtreelora.methods import options_for
from fedtreelora.runtime import checkpoint
from fedtreelora.runtime.embedded import run

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "glue" / "sst2"


def sst2_sets(model: Path, *extra: str) -> list[str]:
    return [
        f"model.name='{model}'", f"data.dir='{SST2}'", "data.n_clients=4", "data.n_train=16",
        "data.n_test=16", "federation.rounds=3", "train.batch_size=8", "fedtreelora.warmup_rounds=1",
        "fedlease.warmup_rounds=1", "model.max_length=32", "train.lr=0.01", "train.mixer_lr=0.5", *extra,
    ]  # fmt: skip


def framework_logits(folder: Path, client: int) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """The client's own forward in the framework (its personalised state on the run's backbone) on its
    test rows, and those batches."""
    state = checkpoint.load(folder)
    assert state is not None
    from fedtreelora.config import from_raw

    fed = prepare(from_raw(state["config"], options_for()))
    method, kept = state["method"], state["kept"][client]
    fed.host.load(method.client_state(kept, method.payload(client)), lambda name: False, method.mixer)
    fed.host.model.eval()
    batches = list(fed.task.batches(fed.test[client], 8, group_by_length=True))
    with torch.no_grad():
        return [
            fed.host.model(**{k: v for k, v in b.items() if k != "labels"}).logits for b in batches
        ], batches


EXACT = [
    ("local",),
    ("fedit",),
    ("ffa", "ffa.rank_factor=2"),
    ("fedsa",),
    ("feddpa",),
    ("fedtreelora", "fedtreelora.tau=-1.0"),  # K > 1: cluster + sigmoid(alpha) x external, rank 2r
    ("fedtreelora", "fedtreelora.tau=-1.0", "fedtreelora.interaction=decomposed"),
    ("fedtreelora", "fedtreelora.interaction=isolationist"),
    ("fedit", "model.train_head=true"),
]


@pytest.mark.skipif(not SST2.exists(), reason="needs ../shared/data beside the checkout")
@pytest.mark.parametrize("sets", EXACT, ids=[" ".join(s) for s in EXACT])
def test_exported_adapter_reproduces_the_personalised_logits(
    tmp_path: Path, tiny_bert: Path, sets: tuple[str, ...]
) -> None:
    method, *extra = sets
    res = run(
        load_config(None, sst2_sets(tiny_bert, f"method='{method}'", *extra), options_for()), out=tmp_path
    )
    if method == "fedtreelora" and "tau=-1.0" in " ".join(extra):
        assert max(res["topology"]["k_per_layer"]) > 1  # external experts exist, so the export is rank 2r+
    export_client(tmp_path, 1, tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    ours, batches = framework_logits(tmp_path, 1)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    peft = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        theirs = [peft(**{k: v for k, v in b.items() if k != "labels"}).logits for b in batches]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    plain = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2).eval()
    with torch.no_grad():  # and the adapter matters: the base model alone answers differently
        assert not torch.allclose(
            plain(**{k: v for k, v in batches[0].items() if k != "labels"}).logits, ours[0]
        )


@pytest.mark.skipif(not SST2.exists(), reason="needs ../shared/data beside the checkout")
@pytest.mark.parametrize(
    ("sets", "reason"),
    [
        (("fedalt",), "per-token softmax gate"),
        (("fedlease",), "top-M router"),
        (("fedtreelora", "fedtreelora.tau=-1.0", "fedtreelora.interaction=router"), "per-token softmax gate"),
        (("zeroshot", "federation.rounds=1"), "holds no LoRA"),
    ],
)
def test_methods_without_a_single_lora_form_refuse_in_one_line(
    tmp_path: Path, tiny_bert: Path, sets: tuple[str, ...], reason: str
) -> None:
    method, *extra = sets
    run(load_config(None, sst2_sets(tiny_bert, f"method='{method}'", *extra), options_for()), out=tmp_path)
    with pytest.raises(ExportError, match=reason):
        export_client(tmp_path, 0, tmp_path / "adapter")
    proc = subprocess.run(
        [sys.executable, "-m", "fedtreelora", "export", str(tmp_path), "--client", "0",
         "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and reason in proc.stderr and "Traceback" not in proc.stderr


def test_export_on_a_decoder(tmp_path: Path, tiny_llama: Path, tiny_flan: list[Path]) -> None:
    sets = [
        f"model.name='{tiny_llama}'", "data.partition='task'", f"data.tasks={[str(t) for t in tiny_flan]!r}",
        "data.n_clients=4", "data.n_train=8", "data.n_test=4", "federation.rounds=2", "train.batch_size=4",
        "fedtreelora.warmup_rounds=1", "fedtreelora.tau=-1.0", "generation.max_new_tokens=4", "train.lr=0.01",
    ]  # fmt: skip
    run(load_config(None, sets, options_for()), out=tmp_path)
    export_client(tmp_path, 2, tmp_path / "adapter")
    ours, batches = framework_logits(tmp_path, 2)
    peft = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_llama), tmp_path / "adapter"
    ).eval()
    with torch.no_grad():
        theirs = [peft(**{k: v for k, v in b.items() if k != "labels"}).logits for b in batches]
    for a, b in zip(ours, theirs, strict=True):
        # 49,152 logits per token summed in another order: float32 rounding reaches 1.1e-5 on a few
        torch.testing.assert_close(b, a, atol=5e-5, rtol=0)


def test_export_all_clients_from_the_command_line(tmp_path: Path, tiny_bert: Path) -> None:
    if not SST2.exists():
        pytest.skip("needs ../shared/data beside the checkout")
    run(load_config(None, sst2_sets(tiny_bert, "method='fedsa'"), options_for()), out=tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "fedtreelora", "export", str(tmp_path), "--all",
         "--out", str(tmp_path / "all")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == [f"client{i}" for i in range(4)]
