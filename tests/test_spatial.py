"""The vectorised prediction layer against the loop reference, and its properties."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossneuron.errors import CrossneuronError
from crossneuron.spatial import Spatial, padded_size, predicted_positions

from conftest import devices, sparse_relu_map
from reference import predict_loop


def _random_mask(c, h, w, p, seed, density=0.5):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(c, padded_size(h, p), padded_size(w, p), generator=g) < density


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize(
    "p, shape",
    [
        (2, (3, 4, 8, 8)),
        (2, (2, 3, 7, 5)),
        (3, (2, 2, 10, 7)),
        (3, (1, 5, 9, 9)),
        (4, (3, 2, 6, 11)),
        (4, (2, 1, 4, 4)),
    ],
)
def test_layer_matches_loop_reference(p, shape, device):
    n, c, h, w = shape
    total_predicted = 0
    for seed in range(3):
        x = sparse_relu_map(shape, zero_fraction=0.9 - 0.25 * seed, seed=seed)
        mask = _random_mask(c, h, w, p, seed, density=0.1 + 0.3 * seed)
        ref_out, ref_pred, ref_mis = predict_loop(x, mask, p)
        layer = Spatial((c, h, w), p, macs_per_output=7).to(device)
        layer.mask.copy_(mask)
        out = layer(x.to(device)).cpu()
        assert torch.equal(out, ref_out)
        predicted, mispredicted, zeros, images = layer.counts.tolist()
        assert (predicted, mispredicted) == (ref_pred, ref_mis)
        assert zeros == int((x == 0).sum()) and images == n
        total_predicted += ref_pred
    assert total_predicted > 0  # the maps are sparse enough that prediction happens


@pytest.mark.parametrize("p, shape", [(2, (3, 4, 8, 8)), (3, (2, 3, 7, 5)), (4, (2, 2, 6, 11))])
def test_threshold_matches_loop_reference(p, shape):
    """A site threshold t (``--zero-below``): a patch whose computed positions are all <= t is predicted;
    its computed positions keep their values, and only its other non-zeros count as mispredicted."""
    n, c, h, w = shape
    kept_small = 0
    for seed in range(3):
        x = sparse_relu_map(shape, zero_fraction=0.5, seed=seed)
        mask = _random_mask(c, h, w, p, seed, density=0.3)
        threshold = 0.2 + 0.1 * seed
        ref_out, ref_pred, ref_mis = predict_loop(x, mask, p, threshold)
        layer = Spatial((c, h, w), p, macs_per_output=3)
        layer.mask.copy_(mask)
        layer.threshold = threshold
        out = layer(x.clone())
        assert torch.equal(out, ref_out)
        assert layer.counts[:2].tolist() == [ref_pred, ref_mis]
        assert ref_pred > predict_loop(x, mask, p)[1]  # the threshold predicts more than exact zeros do
        kept_small += int(((out > 0) & (out <= threshold) & mask[:, :h, :w]).sum())
        # the same rule where gradients flow (training) and in predicted_positions
        grad_out = layer(x.clone().requires_grad_(True))
        assert torch.equal(grad_out.detach(), ref_out)
        pos = predicted_positions(x, mask, p, threshold)
        assert torch.equal(x.masked_fill(pos, 0), ref_out) and int(pos.sum()) == ref_pred * 1
    assert kept_small > 0  # some predicted patches kept small non-zero computed values


def test_statistics_accumulate_until_reset():
    x = sparse_relu_map((2, 3, 6, 6), seed=4)
    layer = Spatial((3, 6, 6), 2, 1)
    layer.mask.copy_(torch.eye(2, dtype=torch.bool).repeat(3, 3, 3))
    layer(x)
    once = layer.counts.clone()
    layer(x)
    assert torch.equal(layer.counts, 2 * once)
    layer.reset_stats()
    assert layer.counts.sum() == 0


def test_gradients_flow_unchanged_where_not_predicted():
    x = sparse_relu_map((2, 2, 6, 5), seed=1).requires_grad_(True)
    layer = Spatial((2, 6, 5), 2, 1)
    layer.mask.copy_(_random_mask(2, 6, 5, 2, 3, density=0.4))
    upstream = torch.randn(2, 2, 6, 5)
    out = layer(x)
    assert torch.equal(out.detach(), predict_loop(x.detach(), layer.mask, 2)[0])  # the training path's values
    out.backward(upstream)
    fill = predicted_positions(x.detach(), layer.mask, 2)
    assert fill.any()
    assert torch.equal(x.grad[~fill], upstream[~fill])
    assert torch.all(x.grad[fill] == 0)


@pytest.mark.parametrize("p,h,w", [(2, 6, 5), (3, 7, 8)])
def test_bf16_channels_last_training_path_against_the_loop(p, h, w):
    # bf16 training (channels_last): values exactly the loop's, gradients 0 at the predicted positions and the
    # upstream's elsewhere, in the same memory format (the keep factor's strided sub-grid writes)
    x32 = sparse_relu_map((3, 4, h, w), seed=p + h)
    x = x32.to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    layer = Spatial((4, h, w), p, 1)
    layer.mask.copy_(_random_mask(4, h, w, p, seed=h, density=0.4))
    out = layer(x)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out.detach(), predict_loop(x.detach().float(), layer.mask, p)[0].to(torch.bfloat16))
    upstream = torch.randn(x.shape).to(torch.bfloat16)
    out.backward(upstream)
    fill = predicted_positions(x.detach().float(), layer.mask, p)
    assert fill.any() and (~fill).any()
    assert torch.equal(x.grad[~fill], upstream[~fill]) and torch.all(x.grad[fill] == 0)
    assert x.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("threshold", [0.0, 0.3])
@pytest.mark.parametrize("density", [0.0, 0.4, "uniform"])
def test_training_forward_counts_nothing_and_matches_inference(threshold, density):
    # 0.23: a forward with a gradient in training mode skips the statistics; its values are the inference path's
    # (checked against the loop elsewhere), also with a threshold, with a mask that computes nothing (every
    # patch predicted) and with one that computes whole sub-grids; in eval mode a forward with a gradient counts
    x = sparse_relu_map((3, 4, 7, 6), seed=11)
    layer = Spatial((4, 7, 6), 2, [1, 2, 3, 4])
    if density == "uniform":  # one position of four computed in every patch: whole sub-grids
        layer.mask.zero_()
        layer.mask[:, 1::2, 0::2] = True
    else:
        layer.mask.copy_(_random_mask(4, 7, 6, 2, seed=5, density=density))
    layer.threshold = threshold
    trained = layer(x.clone().requires_grad_(True))
    assert torch.count_nonzero(layer.counts) == 0 and torch.count_nonzero(layer.mac_counts) == 0
    with torch.no_grad():
        measured = layer(x.clone())
    assert layer.counts[0] > 0 and layer.counts[3] == 3 and layer.mac_counts[0] > 0
    assert torch.equal(trained.detach(), measured)
    assert not torch.equal(measured, x)
    layer.eval()
    assert torch.equal(layer(x.clone().requires_grad_(True)).detach(), measured) and layer.counts[3] == 6


def test_disabled_or_all_true_layer_is_identity_object():
    x = sparse_relu_map((1, 2, 4, 4))
    layer = Spatial((2, 4, 4), 2, 1)
    assert layer(x) is x
    layer.mask[0, 0, 0] = False  # an in-place change is seen
    assert layer.predicting
    layer.enabled = False
    assert layer(x) is x


def test_wrong_input_shape_is_one_clear_error():
    layer = Spatial((2, 4, 4), 2, 1)
    with pytest.raises(CrossneuronError, match=r"expects input \(N, 2, 4, 4\)"):
        layer(torch.zeros(1, 3, 4, 4))


maps = st.tuples(
    st.integers(2, 4), st.integers(1, 2), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**31)
)


@settings(max_examples=60, deadline=None)
@given(maps, st.floats(0.0, 0.95))
def test_properties(dims, zero_fraction):
    p, n, c, h, w, seed = dims
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    x[torch.rand(n, c, h, w, generator=g) < zero_fraction] = 0
    # all-true mask: nothing changes, nothing is predicted
    layer = Spatial((c, h, w), p, 3)
    assert torch.equal(layer(x), x) and layer.counts[0] == 0
    # any mask: output only ever zeroes values; where nothing was mispredicted, saved <= oracle
    mask = torch.rand(c, padded_size(h, p), padded_size(w, p), generator=g) < 0.5
    layer.mask.copy_(mask)
    layer.reset_stats()
    out = layer(x)
    assert torch.all((out == x) | (out == 0))
    predicted, mispredicted, zeros, _ = layer.counts.tolist()
    assert predicted - mispredicted <= zeros
    if mispredicted == 0:
        assert predicted <= zeros
    # the mask-True positions are never changed
    full = mask[:, :h, :w].expand(n, c, h, w)
    assert torch.equal(out[full], x[full])


@pytest.mark.parametrize("threshold", [0.0, 0.3])
def test_the_training_path_keeps_a_channels_last_map_channels_last(threshold):
    """bf16 training runs channels_last (0.18); the layer's training path must not hand the next convolution
    an NCHW map (0.21: ``masked_fill`` did). Values against the loop reference, gradients zero where predicted."""
    x = sparse_relu_map((2, 4, 6, 7), zero_fraction=0.6, seed=2)
    mask = _random_mask(4, 6, 7, 2, 5, density=0.4)
    layer = Spatial((4, 6, 7), 2, 1)
    layer.mask.copy_(mask)
    layer.threshold = threshold
    xc = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out = layer(xc)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out.detach(), predict_loop(x, mask, 2, threshold)[0])
    out.backward(torch.ones_like(out))
    fill = predicted_positions(x, mask, 2, threshold)
    assert fill.any() and torch.equal(xc.grad, (~fill).to(x.dtype))
