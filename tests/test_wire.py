"""The wire format and the node protocol, without Flower: a loopback through JSON and packed buffers."""

import dataclasses
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from fedtreelora import wire
from fedtreelora.allocation import Assignment
from fedtreelora.client import ClientResult
from fedtreelora.config import load_config, rerooted
from fedtreelora.federation import Federation
from fedtreelora.methods import REGISTRY, ClientPlan, options_for
from fedtreelora.runtime.embedded import run
from fedtreelora.runtime.executors import EvalJob, TrainJob
from fedtreelora.runtime.node import Node, NodeStore, eval_request, train_request, train_result
from fedtreelora.tasks import Score

from .test_durability import without_timings
from .test_end_to_end import tiny_run, tiny_sets_for


def test_a_packed_state_unpacks_bit_for_bit() -> None:
    state = {
        "a": torch.randn(3, 5),
        "b": torch.randn(7, dtype=torch.float64),
        "c": torch.randn(2, 3).to(torch.bfloat16),  # 12 bytes: the next tensor starts at padding
        "d": torch.tensor(1.5),  # a 0-d mixing scalar
        "e": torch.arange(5, dtype=torch.int64),
        "f": torch.randn(4, 4)[:, 1],  # not contiguous
    }
    spec, buffer = wire.pack_state(state)
    assert len(buffer) % wire.ALIGN == 0
    back = wire.unpack_state(json.loads(json.dumps(spec)), buffer)
    assert list(back) == list(state)
    for name, t in state.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape
        assert torch.equal(back[name], t)
    assert wire.unpack_state(*wire.pack_state({})) == {}


def test_a_damaged_buffer_is_refused() -> None:
    spec, buffer = wire.pack_state({"a": torch.zeros(4)})
    with pytest.raises(ValueError, match="too short"):
        wire.unpack_state(spec, buffer[:8])
    with pytest.raises(ValueError, match="left over"):
        wire.unpack_state(spec, buffer + bytes(8))
    with pytest.raises(ValueError, match="unknown dtype"):
        wire.unpack_state([("a", "nonsense", [4])], buffer)


def test_plans_assignments_stats_and_scores_survive_json() -> None:
    plan = ClientPlan("federated", ("*.cluster.*",), ("*.cluster.B",), ("*.mix.*",), ("*.lora.*",),
                      frozenset({0, 3}), frozenset({3}))  # fmt: skip
    assert wire.plan_from_json(json.loads(json.dumps(wire.plan_to_json(plan)))) == plan
    for a in (None, Assignment((1, 4), 2), Assignment(None, 3, fisher_batches=2)):
        assert wire.assignment_from_json(json.loads(json.dumps(wire.assignment_to_json(a)))) == a
    score = Score(0.75, ({"input": "x", "output": "y"},))
    assert wire.score_from_json(json.loads(json.dumps(wire.score_to_json(score)))) == score


class Loopback:
    """An executor that speaks the node protocol: every message goes through JSON and a packed buffer to
    a freshly opened node (as a Flower node starts a new process per message) with its state on disk."""

    def __init__(self, fed: Federation, folder: Path) -> None:
        self.config, self.folder = fed.cfg.to_dict(), folder

    def _node(self, request: dict[str, Any], client_id: int) -> Node:
        return Node.open(request, client_id, self.folder)

    @staticmethod
    def _through_wire(request: dict[str, Any], state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], Any]:
        spec, buffer = wire.pack_state(state)
        return json.loads(json.dumps(request)), wire.unpack_state(spec, buffer)

    def train(self, jobs: Sequence[TrainJob]) -> Iterator[ClientResult]:
        for job in jobs:
            request, payload = self._through_wire(*train_request(job, "key", self.config))
            reply, upload = self._node(request, job.client_id).train(request, payload)
            yield train_result(*self._through_wire(reply, upload))

    def evaluate(self, jobs: Sequence[EvalJob]) -> dict[int, Score]:
        out = {}
        for job in jobs:
            request, payload = self._through_wire(*eval_request(job, "key", self.config))
            out[job.client_id] = self._node(request, job.client_id).evaluate(request, payload)
        return out

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "method, extra",
    [(m, ()) for m in sorted(REGISTRY)]
    + [("fedtreelora", ("allocation.strategy='fim'", "federation.client_failure=0.3", "seed=3"))],
)
def test_nodes_that_keep_state_on_disk_give_the_embedded_numbers(
    tmp_path: Path, tiny_bert: Path, tiny_task: Path, method: str, extra: tuple[str, ...]
) -> None:
    sets = (f"method='{method}'", *extra)
    embedded = tiny_run(tiny_bert, tiny_task, *sets)

    def loopback(fed: Federation) -> Loopback:
        return Loopback(fed, tmp_path)

    cfg = load_config(None, tiny_sets_for(tiny_bert, tiny_task, *sets), options_for())
    deployed = run(cfg, executor=loopback)
    same = [json.dumps(without_timings(r), sort_keys=True) for r in (deployed, embedded)]  # NaN == NaN
    assert same[0] == same[1]
    # each client's folder holds only what the server may still ask for: its latest accepted state
    for folder in (tmp_path / "key").iterdir():
        assert len(list(folder.glob("r*.safetensors"))) <= 2


def test_a_node_store_keeps_states_exactly_and_prunes_old_rounds(tmp_path: Path) -> None:
    store = NodeStore(tmp_path, "run", 3)
    for rnd in range(3):
        store.save(rnd, {"x": torch.full((2,), float(rnd))})
    store.prune(2)
    assert sorted(p.name for p in store.folder.iterdir()) == ["r2.safetensors"]
    assert torch.equal(store.load(2)["x"], torch.full((2,), 2.0))
    with pytest.raises(FileNotFoundError, match="no state of client client-3 for round 1"):
        store.load(1)


def test_a_node_reads_its_copy_of_the_data_under_its_own_root(
    tmp_path: Path, tiny_bert: Path, tiny_task: Path
) -> None:
    cfg = load_config(None, tiny_sets_for(tiny_bert, tiny_task), options_for())
    assert rerooted(cfg, Path("/srv/copy")).data.dir == "/srv/copy"
    tasks = dataclasses.replace(cfg.data, partition="task", tasks=["/a/flan/x", "/a/flan/y"], dir="/a/flan/x")
    assert rerooted(dataclasses.replace(cfg, data=tasks), Path("/r")).data.tasks == ["/r/x", "/r/y"]
    copy = tmp_path / "elsewhere"
    shutil.copytree(tiny_task, copy)
    request = {"config": cfg.to_dict(), "run_key": "k"}
    here, there = Node.open(request, 1, tmp_path), Node.open(request, 1, tmp_path, data_root=copy)
    assert there.fed.cfg.data.dir == str(copy)
    assert [c.train for c in here.fed.clients] == [c.train for c in there.fed.clients]
