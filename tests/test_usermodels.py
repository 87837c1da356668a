"""A user's model file, weights file and timm name through the CLI (issue 16, item 3)."""

import json

import pytest
import torch
from safetensors.torch import save_file

MODEL_FILE = '''
import torch.nn as nn


def small(num_classes=10):
    """ReLU6 and a grouped conv: two sites."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6(),
                         nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, num_classes))


def no_classes():
    return small(10)


def broken():
    raise RuntimeError("no GPU here")
'''


@pytest.fixture
def user_files(tmp_path):
    (tmp_path / "mine.py").write_text(MODEL_FILE)
    ns = {}
    exec(MODEL_FILE, ns)
    torch.manual_seed(0)
    model = ns["small"](10)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    return tmp_path, model


def test_model_file_and_weights_file_make_a_checkpoint_every_command_takes(user_files, cli, tmp_path):
    folder, model = user_files
    code, out, err = cli("sites", "--model", f"{folder}/mine.py:small", "--input-shape", "3,16,16")
    assert code == 0, err
    assert "2 sites" in out
    for weights in ("w.safetensors", "w.pt"):
        ckpt = tmp_path / f"ckpt-{weights}"
        code, _, err = cli("train", "--model", f"{folder}/mine.py:small", "--dataset", "synthetic", "--epochs", "0",
                           "--weights", str(folder / weights), "--fp32", "--out", str(ckpt), "--quiet")  # fmt: skip
        assert code == 0, err
        meta = json.loads((ckpt / "meta.json").read_text())
        assert meta["model"] == f"{(folder / 'mine.py').resolve()}:small"  # found from any directory
        from crossneuron.checkpoint import load

        loaded, _ = load(ckpt)
        x = torch.randn(2, 3, 16, 16)
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)  # the user's weights, exactly
    code, out, err = cli("evaluate", "--checkpoint", str(ckpt), "--split", "test")
    assert code == 0, err
    code, _, err = cli("optimize", "--checkpoint", str(ckpt), "--out", str(tmp_path / "run"), "--mode",
                       "uniform-layer", "--eps", "0,1", "--calib", "100", "--engine", "fast", "--quiet")  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "run" / "uniform-layer" / "eps-1" / "result.json").is_file()


@pytest.mark.parametrize("model,says", [
    ("mine.py:nosuch", "has no callable 'nosuch'"),
    ("mine.py:broken", "the factory raised RuntimeError: no GPU here"),
    ("missing.py:small", "is not a file"),
    ("nosuchpackage.mod:f", "cannot import nosuchpackage.mod"),
    ("timm:resnet18", "needs timm: pip install 'crossneuron[timm]'"),
])  # fmt: skip
def test_bad_user_models_are_one_clear_line(user_files, cli, model, says):
    folder, _ = user_files
    name = f"{folder}/{model}" if model.endswith((":nosuch", ":broken", ":small")) else model
    if model.startswith("timm:"):
        try:
            import timm  # noqa: F401

            pytest.skip("timm is installed here: the missing-timm line cannot be seen")
        except ImportError:
            pass
    code, _, err = cli("sites", "--model", name, "--input-shape", "3,16,16")
    assert code == 2 and says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_weights_that_do_not_fit_or_are_not_tensors_are_refused(user_files, cli, tmp_path):
    folder, model = user_files
    bad = dict(model.state_dict())
    bad["1.weight"] = torch.ones(5)
    torch.save(bad, tmp_path / "bad.pt")
    torch.save({"w": [1, 2]}, tmp_path / "notensors.pt")
    for weights, says in (("bad.pt", "does not fit the model (shape of 1.weight: (5,) here, (4,) in the model)"),
                          ("notensors.pt", "not a state_dict")):  # fmt: skip
        code, _, err = cli("train", "--model", f"{folder}/mine.py:small", "--dataset", "synthetic", "--epochs", "0",
                           "--weights", str(tmp_path / weights), "--out", str(tmp_path / "c"), "--quiet")  # fmt: skip
        assert code == 2 and says in err, err


def image_folder(root, per_class=(12, 4)):
    """DIR/train/<class>/*.png and DIR/val/<class>/*.png: red-ish and blue-ish 20x24 images."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for part, n in zip(("train", "val"), per_class, strict=True):
        for k, cls in enumerate(("blue", "red")):
            (root / part / cls).mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 100, (20, 24, 3), generator=g, dtype=torch.uint8)
                pixels[..., 2 * (1 - k)] += 150
                Image.fromarray(pixels.numpy()).save(root / part / cls / f"{i}.png")
    return root


def test_an_image_folder_trains_and_every_command_reads_it_from_anywhere(tmp_path, cli, monkeypatch):
    folder = image_folder(tmp_path / "imgs")
    ckpt = tmp_path / "ckpt"
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("train", "--model", "resnet18", "--width", "0.125", "--dataset", "imagefolder:imgs",
                       "--input-size", "16", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--epochs", "1",
                       "--batch-size", "8", "--out", str(ckpt), "--quiet")  # fmt: skip
    assert code == 0, err
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["dataset"] == f"imagefolder:{folder.resolve()}" and meta["input_shape"] == [3, 16, 16]
    assert meta["num_classes"] == 2 and meta["mean"] == [0.5, 0.5, 0.5] and meta["val_size"] == 4  # 24 // 5
    monkeypatch.chdir(folder / "train")  # elsewhere: the folder is found by its recorded path
    code, out, err = cli("evaluate", "--checkpoint", str(ckpt), "--split", "test", "--json")
    assert code == 0, err
    assert json.loads(out)["images"] == 8
    from crossneuron.context import open_checkpoint
    from crossneuron.formats import LazyImages

    x, y = open_checkpoint(ckpt).data("test")
    images = x.load() if isinstance(x, LazyImages) else x
    assert images.shape == (8, 3, 16, 16) and y.tolist() == [0] * 4 + [1] * 4  # classes sorted: blue, red
    assert (images[4:, 0].float().mean() > images[4:, 2].float().mean()) and \
        (images[:4, 2].float().mean() > images[:4, 0].float().mean())  # fmt: skip


@pytest.mark.parametrize("args,says", [
    (["--dataset", "imagefolder:nowhere"], "is not in ImageFolder layout"),
    (["--dataset", "synthetic", "--input-size", "16"], "apply to --dataset imagefolder:DIR only"),
    (["--dataset", "nosuch"], "unknown dataset 'nosuch'"),
])  # fmt: skip
def test_bad_image_folder_options_are_one_clear_line(cli, tmp_path, args, says):
    code, _, err = cli("train", "--model", "resnet18", *args, "--epochs", "1", "--out", str(tmp_path / "c"))
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
