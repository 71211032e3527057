"""LatentMemory: byte budget, float16 storage, class balance, refresh and sampling."""
import pytest
import torch

from ali_replay.latent_memory import LatentMemory


def _codes(n, dim=8, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_budget_and_dtypes():
    memory = LatentMemory(latent_dim=8, budget_bytes=1000)
    assert memory.entry_bytes == 8 * 2 + 2  # float16 code + int16 label
    assert memory.capacity == 1000 // 18
    memory.add(_codes(500), torch.zeros(500, dtype=torch.long))
    assert len(memory) == memory.capacity
    assert memory.nbytes == len(memory) * 18 <= 1000
    assert memory.codes.dtype == torch.float16 and memory.labels.dtype == torch.int16


def test_class_balance_when_new_classes_arrive():
    memory = LatentMemory(latent_dim=4, budget_bytes=10 * 60)  # 60 entries of 10 bytes
    memory.add(_codes(100, 4), torch.zeros(100, dtype=torch.long))
    assert memory.counts() == {0: 60}
    memory.add(_codes(100, 4, 1), torch.ones(100, dtype=torch.long))
    assert memory.counts() == {0: 30, 1: 30}
    memory.add(_codes(100, 4, 2), torch.full((100,), 2))
    assert memory.counts() == {0: 20, 1: 20, 2: 20}
    assert memory.classes == [0, 1, 2]


def test_small_class_lends_its_share():
    memory = LatentMemory(latent_dim=4, budget_bytes=10 * 60)
    memory.add(_codes(100, 4), torch.zeros(100, dtype=torch.long))
    memory.add(_codes(5, 4, 1), torch.ones(5, dtype=torch.long))
    assert memory.counts() == {0: 55, 1: 5}


def test_dropping_is_seeded_and_keeps_originals():
    codes = _codes(100, 4)
    kept = []
    for _ in range(2):
        memory = LatentMemory(latent_dim=4, budget_bytes=10 * 60, seed=3)
        memory.add(codes, torch.zeros(100, dtype=torch.long))
        memory.add(_codes(100, 4, 1), torch.ones(100, dtype=torch.long))
        kept.append(memory.codes.clone())
    assert torch.equal(kept[0], kept[1])
    stored = kept[0][:30].float()
    originals = codes.half().float()
    assert all((originals == row).all(1).any() for row in stored)  # the survivors are real entries


def test_replace_codes():
    memory = LatentMemory(latent_dim=4, budget_bytes=1000)
    memory.add(_codes(10, 4), torch.arange(10) % 2)
    labels = memory.labels.clone()
    new = torch.full((10, 4), 0.5)
    memory.replace_codes(new)
    assert torch.equal(memory.codes, new.half()) and torch.equal(memory.labels, labels)
    with pytest.raises(ValueError):
        memory.replace_codes(torch.zeros(3, 4))


def test_sample_is_class_balanced_and_typed():
    memory = LatentMemory(latent_dim=4, budget_bytes=10_000)
    memory.add(_codes(90, 4), torch.cat([torch.zeros(80), torch.ones(5), torch.full((5,), 7)]).long())
    codes, labels = memory.sample(30, torch.Generator().manual_seed(0))
    assert codes.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=8)[[0, 1, 7]].tolist() == [10, 10, 10]
    stored = {tuple(r) for r in memory.codes.float().tolist()}
    assert all(tuple(r) in stored for r in codes.tolist())
    for c in (1, 7):  # each of the 5 codes of a class is used twice before any thrice
        rows = codes[labels == c]
        assert len({tuple(r) for r in rows.tolist()}) == 5


def test_state_dict_round_trip():
    memory = LatentMemory(latent_dim=4, budget_bytes=500)
    memory.add(_codes(20, 4), torch.arange(20) % 3)
    other = LatentMemory(latent_dim=4, budget_bytes=1)
    other.load_state_dict(memory.state_dict())
    assert torch.equal(other.codes, memory.codes) and torch.equal(other.labels, memory.labels)
    assert other.capacity == memory.capacity and other.nbytes == memory.nbytes


def test_empty_memory():
    memory = LatentMemory(latent_dim=4, budget_bytes=100)
    assert len(memory) == 0 and memory.nbytes == 0 and memory.classes == []
    with pytest.raises(ValueError):
        memory.sample(3)
