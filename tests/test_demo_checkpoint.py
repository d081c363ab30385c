"""The digits demo's checkpoint cache: atomic writes, checksum verified on load, bad files retrained."""

import os

import pytest
import torch

import sdekit
from sdekit.demo import checkpoint
from sdekit.demo.checkpoint import CheckpointWarning, checksum_path, load_or_train
from sdekit.demo.train import TrainConfig

CONFIG = TrainConfig(steps=3, batch_size=8, width=8, depth=1, time_dim=4, warmup=1)
SDE = sdekit.VPSDE()


@pytest.fixture(scope="module")
def levels():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 17, (32, 64), generator=g)


def _train(levels, out, **kw):
    return load_or_train(levels, SDE, CONFIG, out, split_seed=0, progress=False, **kw)


def _files(out):
    return sorted(p.name for p in out.iterdir())


def _weights(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_cache_round_trip_writes_checksum_and_loads_verified(levels, tmp_path):
    first = _train(levels, tmp_path)
    assert not first.loaded and first.rejected is None
    assert _files(tmp_path) == [first.path.name, first.path.name + ".sha256"]
    digest, name = checksum_path(first.path).read_text().split()
    assert name == first.path.name and digest == __import__("hashlib").sha256(first.path.read_bytes()).hexdigest()
    second = _train(levels, tmp_path)
    assert second.loaded and second.rejected is None
    for k, v in _weights(first.net).items():
        assert torch.equal(second.net.state_dict()[k], v)


@pytest.mark.parametrize("damage", ["truncated", "flipped_byte", "no_checksum", "wrong_checksum", "garbage",
                                    "other_config"])
def test_damaged_checkpoint_is_retrained_with_a_warning(levels, tmp_path, damage):
    good = _train(levels, tmp_path)
    data = good.path.read_bytes()
    if damage == "truncated":
        good.path.write_bytes(data[: len(data) // 2])
    elif damage == "flipped_byte":
        b = bytearray(data)
        b[len(b) // 2] ^= 0x10
        good.path.write_bytes(bytes(b))
    elif damage == "no_checksum":
        checksum_path(good.path).unlink()
    elif damage == "wrong_checksum":
        checksum_path(good.path).write_text("0" * 64 + "  " + good.path.name + "\n")
    elif damage == "garbage":  # a consistent checksum of a file that is no checkpoint
        checkpoint.save_checkpoint(good.path, torch.nn.Linear(1, 1), CONFIG)
    else:  # a valid file of another config under this name
        checkpoint.save_checkpoint(good.path, good.net, TrainConfig(steps=4, batch_size=8, width=8, depth=1))
    with pytest.warns(CheckpointWarning, match="not used: .*; retraining") as rec:
        again = _train(levels, tmp_path)
    assert not again.loaded and again.rejected and again.rejected in str(rec[0].message)
    assert str(good.path) in str(rec[0].message)
    for k, v in _weights(good.net).items():  # training is seeded: the same weights again
        assert torch.equal(again.net.state_dict()[k], v)
    assert _files(tmp_path) == [good.path.name, good.path.name + ".sha256"]
    assert _train(levels, tmp_path).loaded  # rewritten whole: verified from now on


def test_interrupted_write_leaves_no_partial_file(levels, tmp_path, monkeypatch):
    def half_then_fail(fd, data):
        os.write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(checkpoint, "_write_chunks", half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        _train(levels, tmp_path)
    assert _files(tmp_path) == []  # neither the checkpoint nor a temporary file
    monkeypatch.undo()

    good = _train(levels, tmp_path)
    before = good.path.read_bytes(), checksum_path(good.path).read_bytes()
    monkeypatch.setattr(checkpoint, "_write_chunks", half_then_fail)
    with pytest.raises(OSError, match="simulated"):  # an interrupted overwrite keeps the previous files
        _train(levels, tmp_path, use_cache=False)
    monkeypatch.undo()
    assert (good.path.read_bytes(), checksum_path(good.path).read_bytes()) == before
    assert _files(tmp_path) == [good.path.name, good.path.name + ".sha256"]
    assert _train(levels, tmp_path).loaded

    real_replace = os.replace
    calls = []

    def fail_second_replace(src, dst):  # killed after the checkpoint, before its checksum
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("simulated crash before the checksum was written")
        real_replace(src, dst)

    checksum_path(good.path).unlink()
    good.path.unlink()
    monkeypatch.setattr(checkpoint.os, "replace", fail_second_replace)
    with pytest.raises(OSError, match="simulated crash"):
        _train(levels, tmp_path)
    monkeypatch.undo()
    assert _files(tmp_path) == [good.path.name]  # a checkpoint without checksum: not trusted
    with pytest.warns(CheckpointWarning, match="no valid checksum file"):
        assert not _train(levels, tmp_path).loaded
    assert _train(levels, tmp_path).loaded


def test_stale_temporary_files_are_removed_by_the_next_save(levels, tmp_path):
    good = _train(levels, tmp_path)
    stale = tmp_path / f".{good.path.name}.abc123.tmp"
    fresh = tmp_path / f".{good.path.name}.def456.tmp"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"being written")
    old = os.path.getmtime(stale) - 2 * checkpoint.STALE_TMP_S
    os.utime(stale, (old, old))
    _train(levels, tmp_path, use_cache=False)
    assert not stale.exists() and fresh.exists()  # another writer's recent file is left alone
