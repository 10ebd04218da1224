"""Generation: prompts, the response-only loss, batched greedy decoding, ROUGE, FLAN rows, full runs."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from fedtreelora.config import ConfigError, load_config
from fedtreelora.data import DataError, load_split
from fedtreelora.federation import load_clients
from fedtreelora.generate import MIN_SHARED, cut_at_stop, greedy, shared_prefix
from fedtreelora.methods import REGISTRY, options_for
from fedtreelora.runtime.embedded import run
from fedtreelora.tasks import kind_for
from fedtreelora.tasks.generation import IGNORE, GenerationTask, Instruction, fit, rouge1, truncate_middle

from .conftest import write_task


@pytest.fixture(scope="module")
def tokenizer(tiny_llama: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_llama)


def row(instruction: str, output: str) -> Instruction:
    return Instruction(instruction, output, (output,))


def task_for(tokenizer: PreTrainedTokenizerBase, max_length: int = 256) -> GenerationTask:
    return GenerationTask(tokenizer, max_length=max_length, max_new_tokens=8, samples=2)


# ------------------------------------------------------------------------------------------------ prompts


def test_prompt_is_the_chat_template_user_turn_and_assistant_opening(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    ids = task_for(tokenizer).prompt("Fix: hello world")
    expected = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nFix: hello world<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode(ids) == expected


def test_a_model_without_chat_template_gets_the_plain_prompt(tokenizer: PreTrainedTokenizerBase) -> None:
    plain = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    plain.chat_template = None
    text = plain.decode(task_for(plain).prompt("Fix: hello"), skip_special_tokens=True)
    assert text == "### Instruction:\nFix: hello\n\n### Response:\n"


def test_loss_mask_covers_the_response_and_end_of_turn_only(tokenizer: PreTrainedTokenizerBase) -> None:
    task = task_for(tokenizer)
    rows = [row("Say hi", "hi there"), row("Repeat: good film plot", "good film plot")]
    data = task.encode(rows)
    for i, example in enumerate(rows):
        labels, ids = data.labels[i], data.input_ids[i]
        n_prompt = len(task.prompt(example.instruction))
        assert labels[:n_prompt] == [IGNORE] * n_prompt
        assert labels[n_prompt:] == ids[n_prompt:]
        assert tokenizer.decode(labels[n_prompt:]) == example.output + "<|im_end|>"
    batch = task.collate(data, [0, 1])  # (2, t): the shorter row is padded on the right
    short = int(batch["attention_mask"][0].sum())
    assert short == len(data.input_ids[0]) < batch["labels"].shape[1]
    assert (batch["labels"][0, short:] == IGNORE).all()
    assert (batch["attention_mask"][0, short:] == 0).all()


def test_the_models_loss_is_the_mean_over_response_tokens(tiny_llama: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    task = task_for(tokenizer)
    batch = task.collate(task.encode([row("Say hi", "hi there"), row("Repeat: a b c d", "a b c d")]), [0, 1])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (b,t,V)
        loss = float(model(**batch).loss)
    total, count = 0.0, 0
    for b in range(2):  # by hand: token t+1 is predicted at position t, wherever its label is not IGNORE
        for t in range(batch["labels"].shape[1] - 1):
            target = int(batch["labels"][b, t + 1])
            if target != IGNORE:
                total -= float(torch.log_softmax(logits[b, t], -1)[target])
                count += 1
    assert count == sum(len(tokenizer(r).input_ids) + 1 for r in ("hi there", "a b c d"))
    assert loss == pytest.approx(total / count, rel=1e-5)


def test_truncation_keeps_prompt_ends_and_response_start() -> None:
    assert truncate_middle(list(range(10)), 10) == list(range(10))
    assert truncate_middle(list(range(10)), 6) == [0, 1, 2, 7, 8, 9]  # tail = limit // 2 here
    prompt, response = fit(list(range(100, 140)), list(range(10)), 32)
    assert response == list(range(8)) and len(prompt) == 24  # the response keeps a quarter, cut at its end
    assert prompt[:1] == [100] and prompt[-12:] == list(range(128, 140))


# ------------------------------------------------------------------------------------------------ decoding


def test_batched_left_padded_generation_equals_one_prompt_at_a_time(tiny_llama: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    task = task_for(tokenizer)
    prompts = [task.prompt(t) for t in ("hi", "a much longer instruction with many words in it", "two words")]
    prompts += [task.prompt("good " * k) for k in range(1, 6)]
    assert len(shared_prefix(prompts)) >= MIN_SHARED  # the system turn: read once, copied into each batch
    pad = task.pad
    free = greedy(model, prompts, stop=task.stop_tokens(model), pad=pad, max_new_tokens=12, batch_size=8)
    assert len({tuple(o) for o in free}) > 1  # not a degenerate model that says the same to everyone
    # Also stop on tokens some answers reach midway: rows leave the batch (and its cache) at different steps.
    stop = sorted({*task.stop_tokens(model), free[0][3], free[1][6]})
    batched = greedy(model, prompts, stop=stop, pad=pad, max_new_tokens=12, batch_size=8)
    assert sorted({len(o) for o in batched}) != [12]  # some rows did stop early
    assert batched == greedy(model, prompts, stop=stop, pad=pad, max_new_tokens=12, batch_size=1)
    assert batched == greedy(model, prompts, stop=stop, pad=pad, max_new_tokens=12, batch_size=3)
    for p, out in zip(prompts, batched, strict=True):  # and what a user calling generate() gets
        ids = torch.tensor([p])
        generated = model.generate(
            input_ids=ids, max_new_tokens=12, do_sample=False, pad_token_id=pad, eos_token_id=stop
        )
        assert out == cut_at_stop(generated[0, len(p) :].tolist(), stop)


def test_shared_prefix_leaves_every_prompt_a_token() -> None:
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == [1, 2, 3]
    assert shared_prefix([[1, 2, 3], [1, 2, 3, 4]]) == [1, 2]  # the shorter prompt keeps its last token
    assert shared_prefix([[1, 2], [3, 4]]) == [] and shared_prefix([[1, 2, 3]]) == []


def test_cut_at_stop() -> None:
    assert cut_at_stop([5, 6, 2, 2, 2], [2]) == [5, 6]
    assert cut_at_stop([5, 6], [2]) == [5, 6]
    assert cut_at_stop([7, 5], [5, 7]) == []


def test_rouge1_is_the_best_f1_over_references_with_stemming() -> None:
    assert rouge1("the cat sat", ["a dog ran", "the cat sat"]) == 1.0
    assert rouge1("cats running", ["cat run"]) == 1.0  # Porter stemming
    assert rouge1("the cat", ["the cat sat on the mat"]) == pytest.approx(0.5)  # P = 1, R = 2/6
    assert rouge1("The CAT!", ["the cat"]) == 1.0  # case and punctuation do not count
    assert rouge1("", ["the cat"]) == 0.0


# ------------------------------------------------------------------------------------------------ data


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_flan_rows_without_output_are_one_line_errors(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "train.jsonl", [{"instruction": "x", "output": "y"}, {"instruction": "z"}])
    with pytest.raises(DataError, match=r"train\.jsonl:2: 'output' must be a string, got missing"):
        load_split(path, GenerationTask.parse_row)


def test_empty_references_fall_back_to_the_output(tmp_path: Path) -> None:
    rows = [{"instruction": "x", "output": "y", "references": []}, {"instruction": "x", "output": "y"}]
    split = load_split(write_rows(tmp_path / "t.jsonl", rows), GenerationTask.parse_row)
    assert [e.references for e in split.examples] == [("y",), ("y",)]
    bad = write_rows(tmp_path / "b.jsonl", [{"instruction": "x", "output": "y", "references": "y"}])
    with pytest.raises(DataError, match="'references' must be a list of strings"):
        load_split(bad, GenerationTask.parse_row)


def test_task_kind_is_told_from_the_rows(tmp_path: Path, tiny_flan: list[Path]) -> None:
    glue = write_task(tmp_path / "glue", 4, 4)
    assert kind_for([glue], "auto").kind == "classification"
    assert kind_for(tiny_flan, "auto").kind == "generation"
    assert kind_for([glue], "generation").kind == "generation"  # a setting overrides the rows
    with pytest.raises(ConfigError, match="one run holds one task kind"):
        kind_for([glue, tiny_flan[0]], "auto")
    odd = tmp_path / "odd"
    odd.mkdir()
    for split in ("train", "test"):
        write_rows(odd / f"{split}.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(ConfigError, match=r"keys \['answer', 'question'\], which match no task kind"):
        kind_for([odd], "auto")
    with pytest.raises(ConfigError, match=r"data\.kind: must be one of auto, classification, generation"):
        kind_for([glue], "ner")


def test_groups_come_from_the_rows_and_label_skew_is_refused(tiny_flan: list[Path]) -> None:
    sets = ["data.partition='task'", f"data.tasks={[str(t) for t in tiny_flan]!r}", "data.n_clients=4"]
    sets += ["data.n_train=4", "data.n_test=2"]
    _, _, clients = load_clients(load_config(None, sets, options_for()))
    assert [(c.task, c.group) for c in clients] == [
        ("copy_a", "editing"), ("copy_b", "editing"), ("copy_c", "sentiment"), ("copy_d", "sentiment"),
    ]  # fmt: skip
    one = [f"data.dir='{tiny_flan[0]}'", "data.partition='dirichlet'"]
    with pytest.raises(ConfigError, match="'dirichlet' skews class labels, and generation rows have none"):
        load_clients(load_config(None, one, options_for()))


# ------------------------------------------------------------------------------------------------ runs


def tiny_generation_run(model: Path, tasks: list[Path], *sets: str) -> dict[str, Any]:
    base = [
        f"model.name='{model}'",
        "data.partition='task'",
        f"data.tasks={[str(t) for t in tasks]!r}",
        "data.n_clients=4",
        "data.n_train=8",
        "data.n_test=4",
        "federation.rounds=3",
        "federation.eval_every=1",
        "train.batch_size=4",
        "fedtreelora.warmup_rounds=1",
        "fedlease.warmup_rounds=1",
        "generation.max_new_tokens=6",
        "generation.samples=2",
    ]
    return run(load_config(None, [*base, *sets], options_for()))


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_method_runs_on_a_decoder(tiny_llama: Path, tiny_flan: list[Path], method: str) -> None:
    res = tiny_generation_run(tiny_llama, tiny_flan, f"method='{method}'")
    assert res["metric"] == "rouge1" and "mean_accuracy" not in res
    assert 0.0 <= res["mean_score"] <= 1.0
    assert set(res["groups"]) == {"editing", "sentiment"}
    assert set(res["tasks"]) == {"copy_a", "copy_b", "copy_c", "copy_d"}
    assert res["majority_baseline"] is None
    assert res["params"]["targets"] == ["q_proj", "v_proj"] and res["params"]["adapted_layers"] == 4
    for client in res["clients"]:
        assert len(client["samples"]) == 2 and set(client["samples"][0]) == {"prompt", "output", "reference"}
    assert all(r["mean_score"] is not None and "mean_accuracy" not in r for r in res["rounds"])
    if res["topology"] is not None:
        assert len(res["topology"]["k_per_layer"]) == 4


def test_a_worker_pool_scores_generation_like_one_process(tiny_llama: Path, tiny_flan: list[Path]) -> None:
    one = tiny_generation_run(tiny_llama, tiny_flan, "federation.rounds=2")
    pooled = tiny_generation_run(tiny_llama, tiny_flan, "federation.rounds=2", "federation.workers=2")
    assert [c["score"] for c in pooled["clients"]] == [c["score"] for c in one["clients"]]
    assert [c["samples"] for c in pooled["clients"]] == [c["samples"] for c in one["clients"]]


def test_train_head_on_a_decoder_is_a_config_error(tiny_llama: Path, tiny_flan: list[Path]) -> None:
    with pytest.raises(ConfigError, match=r"model\.train_head: a generation model has no task head"):
        tiny_generation_run(tiny_llama, tiny_flan, "model.train_head=true")


def test_the_packaged_decoder_is_cached_as_float32_safetensors(tiny_llama: Path) -> None:
    from fedtreelora.models import cache_root, resolve

    folder = Path(resolve("smollm2"))  # tiny_llama already converted it once: this is the cache hit
    assert folder.parent == cache_root() / "gguf" and folder.name.startswith("SmolLM2-135M-Instruct.Q4_1-")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert not list(folder.parent.glob(".staging-*"))  # nothing half-written left behind
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())


def test_the_cache_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fedtreelora.models import cache_root

    monkeypatch.setenv("FEDTREELORA_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("FEDTREELORA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x" / "fedtreelora"
