"""Datasets, lookup order, splits and batches, on files the tests write themselves."""

import gzip

import numpy as np
import pytest
import torch

from crossneuron.data import dataset_spec, load_arrays
from crossneuron.errors import CrossneuronError
from crossneuron.formats import read_idx
from crossneuron.splits import augment, batches, indices_hash, make_split, normalise, split_arrays


def write_idx(path, array, gz=False):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def fake_mnist(folder, n_train=50, n_test=20, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for stem, a in arrays.items():
        write_idx(folder / (stem + suffix), a, gz)
    return arrays


def test_idx_layouts_and_npz_load_bit_exact(tmp_path):
    arrays = fake_mnist(tmp_path / "FashionMNIST" / "raw", gz=False)
    got = load_arrays("fashion-mnist", tmp_path)
    assert torch.equal(got.x_train[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.uint8)))
    assert torch.equal(got.y_test, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]))
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)  # NHWC like ../shared/data/cifar10.npz
    y = rng.integers(0, 10, 30)
    np.savez(tmp_path / "cifar10.npz", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    got = load_arrays("cifar10", tmp_path)
    assert got.x_train.shape == (30, 3, 32, 32) and torch.equal(got.x_train[3, 1], torch.from_numpy(x[3, :, :, 1]))


def test_cifar_binary_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(2)
    records = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = rng.integers(0, 256, (4, 3073), dtype=np.uint8)
        rec[:, 0] %= 10
        rec.tofile(folder / name)
        records[name] = rec
    got = load_arrays("cifar10", tmp_path)
    assert got.x_train.shape == (20, 3, 32, 32)
    assert torch.equal(got.x_test[1].flatten(), torch.from_numpy(records["test_batch.bin"][1, 1:]))
    assert int(got.y_train[4]) == records["data_batch_2.bin"][0, 0]


def test_env_root_is_used(tmp_path, monkeypatch):
    fake_mnist(tmp_path / "MNIST" / "raw")
    monkeypatch.setenv("CROSSNEURON_DATA", str(tmp_path))
    assert load_arrays("mnist").x_train.shape == (50, 1, 28, 28)


def test_missing_and_malformed_data_are_clear(tmp_path, monkeypatch):
    monkeypatch.delenv("CROSSNEURON_DATA", raising=False)
    with pytest.raises(CrossneuronError, match=r"dataset 'mnist' not found; looked in: .*mnist.npz.*--download"):
        load_arrays("mnist", tmp_path)
    bad = tmp_path / "bad"
    fake_mnist(bad / "MNIST" / "raw", gz=False)
    (bad / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 12 + b"xx")
    with pytest.raises(CrossneuronError, match="truncated"):
        load_arrays("mnist", bad)
    (tmp_path / "cifar10.npz").write_bytes(b"not a zip")
    with pytest.raises(CrossneuronError, match="not a readable numpy archive"):
        load_arrays("cifar10", tmp_path)
    np.savez(tmp_path / "cifar10.npz", x_train=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(CrossneuronError, match="lacks y_train, x_test, y_test: a dataset archive needs"):
        load_arrays("cifar10", tmp_path)
    whole = (tmp_path / "cifar10.npz").read_bytes()
    (tmp_path / "cifar10.npz").write_bytes(whole[: len(whole) // 2])  # a copy cut short
    with pytest.raises(CrossneuronError, match="not a readable numpy archive \\(truncated or corrupt"):
        load_arrays("cifar10", tmp_path)
    np.savez(tmp_path / "cifar10.npz", x_train=np.zeros((2, 28, 28), np.uint8), y_train=[0, 1],
             x_test=np.zeros((1, 28, 28), np.uint8), y_test=[0])  # fmt: skip
    with pytest.raises(CrossneuronError, match=r"uint8 of shape \(N, 3, 32, 32\)"):
        load_arrays("cifar10", tmp_path)
    with pytest.raises(CrossneuronError, match="unknown dataset 'svhn'"):
        load_arrays("svhn", tmp_path)
    with pytest.raises(CrossneuronError, match="bad magic"):
        (tmp_path / "x.idx").write_bytes(b"\x01\x02\x03\x04")
        read_idx(tmp_path / "x.idx")


def test_split_is_fixed_disjoint_and_hashed():
    a, b = make_split(1000, 100, seed=3), make_split(1000, 100, seed=3)
    assert torch.equal(a.val, b.val) and a.val_hash == b.val_hash == indices_hash(b.val)
    assert len(set(a.val.tolist()) | set(a.train.tolist())) == 1000 and len(a.val) == 100
    assert make_split(1000, 100, seed=4).val_hash != a.val_hash
    with pytest.raises(CrossneuronError, match="val size"):
        make_split(100, 100)
    arrays = load_arrays("synthetic")
    split = make_split(len(arrays.y_train), 300, 0)
    x, y = split_arrays(arrays, split, "val")
    assert torch.equal(x, arrays.x_train[split.val]) and torch.equal(y, arrays.y_train[split.val])


def test_normalise_and_augment():
    spec = dataset_spec("cifar10")
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    z = normalise(x, spec)
    assert torch.allclose(z[:, 1] * spec.std[1] + spec.mean[1], x[:, 1].float() / 255, atol=1e-6)
    g = torch.Generator().manual_seed(0)
    out = augment(x, g)
    assert out.shape == x.shape
    for i in range(6):  # every augmented image is a shifted, possibly flipped crop of the padded original
        padded = torch.nn.functional.pad(x[i], (4, 4, 4, 4))
        found = any(
            torch.equal(out[i], crop) or torch.equal(out[i], crop.flip(-1))
            for dy in range(9)
            for dx in range(9)
            for crop in [padded[:, dy : dy + 32, dx : dx + 32]]
        )
        assert found
    mnist = dataset_spec("mnist")
    xb = list(batches(x[:, :1, :28, :28], torch.arange(6), mnist, 4, shuffle=g, train_augment=True))
    assert [len(b[1]) for b in xb] == [4, 2]  # MNIST is never augmented: values are only normalised
    assert sorted(torch.cat([b[1] for b in xb]).tolist()) == list(range(6))


def _png(path, color, size):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_stl10_tiny_imagenet_and_imagenet_layouts(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    x = np.arange(4 * 3 * 96 * 96, dtype=np.uint64).astype(np.uint8).reshape(4, 3, 96, 96)
    x.transpose(0, 1, 3, 2).tofile(folder / "train_X.bin")  # stored column-major
    np.array([1, 10, 3, 2], np.uint8).tofile(folder / "train_y.bin")
    x[:2].transpose(0, 1, 3, 2).tofile(folder / "test_X.bin")
    np.array([5, 6], np.uint8).tofile(folder / "test_y.bin")
    got = load_arrays("stl10", tmp_path)
    assert torch.equal(got.x_train, torch.from_numpy(x)) and got.y_train.tolist() == [0, 9, 2, 1]

    tiny = tmp_path / "tiny-imagenet-200"
    (tiny / "wnids.txt").parent.mkdir()
    (tiny / "wnids.txt").write_text("n01\nn02\n")
    _png(tiny / "train" / "n01" / "images" / "a.JPEG", (255, 0, 0), (64, 64))
    _png(tiny / "train" / "n02" / "images" / "b.JPEG", (0, 255, 0), (64, 64))
    _png(tiny / "val" / "images" / "v.JPEG", (0, 0, 255), (64, 64))
    (tiny / "val" / "val_annotations.txt").write_text("v.JPEG\tn02\t0\t0\t63\t63\n")
    got = load_arrays("tiny-imagenet", tmp_path)
    assert got.y_train.tolist() == [0, 1] and got.y_test.tolist() == [1]
    images = got.x_train.take([1]).load()
    assert images.shape == (1, 3, 64, 64) and images[0, 1].float().mean() > 200 and images[0, 0].float().mean() < 50

    net = tmp_path / "imagenet"
    _png(net / "train" / "n9" / "x.png", (10, 20, 30), (300, 260))
    _png(net / "train" / "n1" / "y.png", (0, 0, 0), (256, 256))
    _png(net / "val" / "n9" / "z.png", (10, 20, 30), (260, 300))
    got = load_arrays("imagenet", tmp_path)
    assert got.y_train.tolist() == [0, 1] and got.y_test.tolist() == [1]  # classes sorted: n1, n9
    batch = got.x_test.load()
    assert batch.shape == (1, 3, 224, 224) and abs(batch[0, 2].float().mean() - 30) < 2


def test_download_uses_torchvision_and_skips_present_files(tmp_path):
    fake_mnist(tmp_path / "MNIST" / "raw", gz=False)  # torchvision finds these and downloads nothing
    got = load_arrays("mnist", tmp_path, download=True)
    assert got.x_train.shape == (50, 1, 28, 28)
    with pytest.raises(CrossneuronError, match="pickle"):
        load_arrays("cifar10", tmp_path, download=True)


def test_a_checkpoint_refuses_data_whose_contents_differ(ckpt, cli, monkeypatch, capsys):
    """Checkpoints record a content hash of their data: labels changed behind the same split are refused
    in one line (or, with --other-data, used with a warning)."""
    import dataclasses
    import json

    import crossneuron.context as context
    from crossneuron.context import open_checkpoint
    from crossneuron.data import content_hash

    meta = json.loads((ckpt / "meta.json").read_text())
    ctx = open_checkpoint(ckpt)
    assert meta["data_hash"] == content_hash(ctx.arrays)
    real = context.load_arrays

    def shifted(*args, **kwargs):
        arrays = real(*args, **kwargs)
        return dataclasses.replace(arrays, y_test=(arrays.y_test + 1) % 10)

    monkeypatch.setattr(context, "load_arrays", shifted)
    with pytest.raises(CrossneuronError, match="differs from the data .* was trained on .*--other-data"):
        open_checkpoint(ckpt)
    code, _, err = cli("evaluate", "--checkpoint", ckpt)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "content hash" in lines[0]
    capsys.readouterr()
    other = open_checkpoint(ckpt, other_data=True)
    assert (other.arrays.y_test != ctx.arrays.y_test).all()
    assert "warning:" in capsys.readouterr().err
