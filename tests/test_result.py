"""result.json: one schema (``result.Result``), read and written by one module, applied by ``apply_result``."""

import json
import sys

import pytest
import torch

import crossneuron as cn
from crossneuron.errors import CrossneuronError
from crossneuron.result import Result, apply_result, load_result, write_result


def _path(full_run, mode="max-granularity", eps="5"):
    return full_run[1] / mode / f"eps-{eps}" / "result.json"


def test_round_trip_keeps_every_key_in_order(full_run, tmp_path):
    for mode in ("uniform-layer", "max-granularity"):
        raw = json.loads(_path(full_run, mode).read_text())
        write_result(tmp_path / "again.json", load_result(_path(full_run, mode)))
        again = json.loads((tmp_path / "again.json").read_text())
        assert again == raw and list(again) == list(raw)


def test_apply_result_sets_the_masks_the_pieces_describe(full_run):
    """Each site's mask, built by hand from the pieces (a loop over blocks and channels), equals the net's."""
    ctx = full_run[0]
    result = load_result(_path(full_run))
    net = cn.attach(ctx.model, ctx.spec.input_shape, 2)
    apply_result(net, result)
    pieces = 0
    for site in net.sites:
        entry = result.masks[site.name]
        c, hp, wp = net.spatial(site).mask.shape
        side = entry["side"]
        expected = torch.ones(c, hp, wp, dtype=torch.bool)
        per_row = -(-wp // side)
        for channel, block, code in entry["pieces"]:
            pattern = cn.code_to_pattern(code, 2)
            for ch in range(c) if channel is None else [channel]:
                for i in range(hp):
                    for j in range(wp):
                        if block is None or (i // side) * per_row + j // side == block:
                            expected[ch, i, j] = pattern[i % 2, j % 2]
            pieces += 1
        assert torch.equal(net.spatial(site).mask, expected), site.name
    assert pieces > 0


def _bad_results(full_run):
    raw = json.loads(_path(full_run).read_text())
    site = next(name for name, entry in raw["masks"].items() if entry["pieces"])
    entry = raw["masks"][site]

    def edited(**change):
        return {**raw, **change}

    def with_site(new_entry):
        return {**raw, "masks": {**raw["masks"], site: new_entry}}

    return [
        ("a bare number", 7, "not a crossneuron result"),
        ("masks null", edited(masks=None), "masks must be an object"),
        ("channel 999", with_site({**entry, "pieces": [[999, None, 1]]}), "channel 999"),
        ("block 999", with_site({**entry, "pieces": [[0, 999, 1]]}), "block 999"),
        ("channel -1", with_site({**entry, "pieces": [[-1, None, 1]]}), "bad piece"),
        ("side 0", with_site({**entry, "side": 0}), "block side 0"),
        ("a one-element piece", with_site({**entry, "pieces": [[1]]}), "bad piece"),
        ("pattern code 16 for p = 2", with_site({**entry, "pieces": [[0, None, 16]]}), "bad piece"),
        ("patch size edited", edited(patch_size=3), "block side"),
        ("eps not finite", edited(eps="nan"), "eps must be a finite number"),
    ]


@pytest.mark.parametrize("case", range(10))
def test_bad_result_files_are_one_clear_line(full_run, tmp_path, case, monkeypatch, capsys):
    """Through the library (CrossneuronError) and through `crossneuron evaluate --masks` (the CLI's
    ``main`` in this process: exit 2, one line on stderr, no traceback)."""
    from crossneuron.cli import main

    what, data, message = _bad_results(full_run)[case]
    bad = tmp_path / "result.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(CrossneuronError, match=message):
        ctx = full_run[0]
        apply_result(cn.attach(ctx.model, ctx.spec.input_shape, 2), load_result(bad))
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["crossneuron", "evaluate", "--checkpoint", str(full_run[0].path),
                                      "--masks", str(bad)])  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and len(lines) == 1 and message in lines[0], (what, err)


def test_a_folder_or_missing_file_is_refused(tmp_path):
    with pytest.raises(CrossneuronError, match="is a folder"):
        load_result(tmp_path)
    with pytest.raises(CrossneuronError, match="not found"):
        load_result(tmp_path / "nope.json")
    assert Result.__dataclass_fields__["retrained_from"].default is None  # omitted from files unless retrained


def test_written_files_get_the_users_usual_mode(full_run, tmp_path):
    """result.json and masks.safetensors (safetensors writes 0600 itself) end up 0666 less the umask."""
    import os

    from crossneuron.result import export_masks, result_masks

    ctx = full_run[0]
    net = cn.attach(ctx.model, ctx.spec.input_shape, 2)
    result = load_result(_path(full_run))
    umask = os.umask(0o022)
    try:
        write_result(tmp_path / "result.json", result)
        export_masks(tmp_path / "masks.safetensors", net, result_masks(net, result))
    finally:
        os.umask(umask)
    for name in ("result.json", "masks.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
