"""pipeline/folds.py: a fold's features standardised per batch, read from memory-mapped arrays."""
from __future__ import annotations

import tracemalloc

import numpy as np
import torch

from pipeline.folds import NormalizedRows
from pipeline.nets import take
from pipeline.normalize import apply_normalizer, fit_normalizer
from pipeline.training import _batches


def _memmap(tmp_path, shape, seed: int = 0) -> np.ndarray:
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(seed).normal(3.0, 2.0, shape).astype(np.float32))
    return np.load(path, mmap_mode="r")


def test_rows_read_per_batch_equal_the_whole_array_normalised(tmp_path):
    """Bit for bit: per-batch normalisation changes no result of a training run."""
    x = _memmap(tmp_path, (40, 3, 16))
    mean, std = fit_normalizer(np.asarray(x[:30]), (0, 2))
    whole = torch.from_numpy(apply_normalizer(np.asarray(x), mean, std))
    rows = NormalizedRows(x, mean, std)
    assert rows.shape == (40, 3, 16) and len(rows) == 40
    assert torch.equal(rows[:], whole)
    for idx in (torch.tensor([7, 2, 39, 2]), np.array([5, 1]), slice(10, 20)):
        assert torch.equal(rows[idx], whole[idx])


def test_a_subset_indexes_into_its_own_rows(tmp_path):
    x = _memmap(tmp_path, (20, 4))
    mean, std = np.float32(1.0), np.float32(2.0)
    part = NormalizedRows(x, mean, std).subset(np.array([3, 8, 15, 19]))
    assert part.shape == (4, 4)
    assert torch.equal(part[torch.tensor([1, 3])], torch.from_numpy(apply_normalizer(x[[8, 19]], mean, std)))
    assert torch.equal(part.subset(np.array([2]))[:], torch.from_numpy(apply_normalizer(x[[15]], mean, std)))


def test_mean_row_is_the_mean_of_the_normalised_rows(tmp_path):
    x = _memmap(tmp_path, (50, 2, 3))
    rows = NormalizedRows(x, np.float32(3.0), np.float32(2.0)).subset(np.arange(7, 50))
    expected = torch.from_numpy(apply_normalizer(x[7:], np.float32(3.0), np.float32(2.0))).mean(dim=0, keepdim=True)
    torch.testing.assert_close(rows.mean_row(chunk=8), expected)


def test_an_epoch_over_a_memory_mapped_array_allocates_one_batch_not_a_copy(tmp_path):
    """The memory point of issue 14: reading every row once through batches allocates a few
    batches of normalised rows at a time, not the 32 MB array (numpy's allocations are traced)."""
    x = _memmap(tmp_path, (256, 32, 1024))  # 32 MiB of float32
    mean, std = fit_normalizer(np.asarray(x[:64]), (0, 2))
    inputs = {"eeg": NormalizedRows(x, mean, std).subset(np.arange(200))}
    tracemalloc.start()
    seen = sum(len(take(inputs, idx, torch.device("cpu"))["eeg"])
               for idx in _batches(200, 16, torch.Generator().manual_seed(0)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seen == 200
    batch = 16 * x[0].nbytes  # 2 MiB; reading, centring and scaling it takes a few such buffers
    assert peak < 4 * batch, f"peak {peak / 2**20:.1f} MiB while reading a {x.nbytes / 2**20:.0f} MiB array"


def test_what_a_model_keeps_of_a_view_comes_from_its_train_trials_only(tmp_path):
    """The fill of a missing view (predict's and the robustness check's alike) is the mean
    normalised train row, not the test trials' (whose mean differs here by design); the scale
    range is the train trials' trial_scale range."""
    from pipeline.folds import FoldData
    from pipeline.normalize import trial_scale

    x = _memmap(tmp_path, (40, 3, 16))
    x_test_shifted = np.asarray(x).copy()
    x_test_shifted[30:] += 5.0  # the test trials sit elsewhere
    np.save(tmp_path / "shifted.npy", x_test_shifted)
    x = np.load(tmp_path / "shifted.npy", mmap_mode="r")
    index = {"train": np.arange(0, 24), "val": np.arange(24, 30), "test": np.arange(30, 40)}
    mean, std = fit_normalizer(np.asarray(x[index["train"]]), (0, 2))
    data = FoldData({"eeg": NormalizedRows(x, mean, std)}, torch.zeros(40, dtype=torch.long), index)
    normalised = apply_normalizer(np.asarray(x), mean, std)
    train_mean = normalised[index["train"]].mean(axis=0, keepdims=True)
    np.testing.assert_allclose(data.train_fill()["eeg"].numpy(), train_mean, atol=1e-6)
    assert not np.allclose(train_mean, normalised[index["test"]].mean(axis=0, keepdims=True), atol=1.0)
    stats = data.view_stats()["eeg"]
    assert np.array_equal(stats["fill"], data.train_fill()["eeg"].numpy())
    assert stats["mean"] is mean and stats["std"] is std
    scales = trial_scale(normalised[index["train"]])
    np.testing.assert_allclose(stats["scale_range"], [scales.min(), scales.max()], rtol=1e-6)
    assert trial_scale(normalised[index["test"]]).min() > scales.max()  # the shifted trials are out of it
