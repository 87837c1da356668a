"""The README's Python example runs as written, and what it prints is right."""

import pathlib
import re

import torch
from torch.utils.flop_counter import FlopCounterMode

import crossneuron as cn


def test_readme_python_example_runs_and_prints_true_numbers(capsys):
    """The printed totals, checked against independent counts: 8 images, network MACs from the flop counter
    on the plain model (conv and linear ops only), site MACs summed by hand from the contributing convs, and
    the printed percentage recomputed from the printed integers."""
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has a python example"
    torch.manual_seed(0)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    images, saved, site_macs, network_macs, oracle, mispredicted = (int(v) for v in out[1].split())
    model = cn.build_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=0.25).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    flops = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    assert network_macs == (flops["aten.convolution"] + flops["aten.addmm"]) // 2
    convs = dict(model.named_modules())
    net = cn.attach(model, (3, 32, 32))
    by_hand = sum(s.shape[0] * s.shape[1] * s.shape[2]
                  * sum(convs[c].in_channels * convs[c].kernel_size[0] * convs[c].kernel_size[1] for c in s.convs)
                  for s in net.sites)  # fmt: skip
    assert images == 8 and site_macs == by_hand
    assert 0 < saved <= oracle + mispredicted * max(s.macs_per_output for s in net.sites)
    assert out[2] == f"saved {100 * saved / (images * network_macs):.2f}% of network MACs " \
                     f"(oracle {100 * oracle / (images * network_macs):.2f}%)"  # fmt: skip
