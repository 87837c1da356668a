"""``attach``: a model with a Spatial layer after every site, sharing the model's parameters."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from .errors import CrossneuronError
from .macs import counting, macs_of, pct
from .patterns import check_patch_size
from .sites import Activation, Site, find_sites, skipped_activations, smooth_activations
from .spatial import Spatial
from .tracing import trace

_SPATIAL = "crossneuron_spatial"


@dataclass(frozen=True)
class SiteStats:
    """One site's statistics since the last reset (counts are totals over the images seen)."""

    index: int
    name: str
    images: int
    positions: int  # real output positions per image, C * H * W
    site_macs: int  # MACs per image behind this site
    predicted: int  # predicted positions inside the real H x W
    mispredicted: int  # predicted positions whose true value was non-zero
    zeros: int  # positions whose true value was zero (the oracle)
    macs_saved: int  # MACs of the predicted positions, summed over the images
    oracle_macs: int  # MACs of the zero positions, summed over the images


@dataclass(frozen=True)
class Stats:
    """Totals since the last reset. ``macs_saved``, ``oracle_macs``, ``mispredicted`` and
    ``predicted`` are summed over ``images``; ``site_macs`` and ``network_macs`` are per image."""

    images: int
    network_macs: int
    per_site: list[SiteStats] = field(repr=False)

    @property
    def site_macs(self) -> int:
        return sum(s.site_macs for s in self.per_site)

    @property
    def macs_saved(self) -> int:
        return sum(s.macs_saved for s in self.per_site)

    @property
    def oracle_macs(self) -> int:
        return sum(s.oracle_macs for s in self.per_site)

    @property
    def mispredicted(self) -> int:
        return sum(s.mispredicted for s in self.per_site)

    @property
    def predicted(self) -> int:
        return sum(s.predicted for s in self.per_site)

    @property
    def macs_saved_pct_network(self) -> float:
        return pct(self.macs_saved, self.images, self.network_macs)

    @property
    def macs_saved_pct_sites(self) -> float:
        return pct(self.macs_saved, self.images, self.site_macs)

    @property
    def oracle_pct_network(self) -> float:
        return pct(self.oracle_macs, self.images, self.network_macs)

    @property
    def oracle_pct_sites(self) -> float:
        return pct(self.oracle_macs, self.images, self.site_macs)

    @property
    def mispredicted_rate(self) -> float:
        """Percent of predicted positions whose true value was non-zero."""
        return pct(self.mispredicted, 1, self.predicted)


class PredictiveNet(nn.Module):
    """A traced copy of a model's graph with a Spatial layer after each site.

    Submodules and parameters are the model's own (shared, not copied); the model object itself
    is never modified, so dropping the net leaves it exactly as it was.
    """

    def __init__(self, graph_module, sites: list[Site], patch_size: int, input_shape, macs: int):
        super().__init__()
        self.graph_module = graph_module
        self.sites = sites
        self.patch_size = patch_size
        self.input_shape = tuple(input_shape)
        self.network_macs = macs
        self.skipped: list[tuple[str, str]] = []  # zero-producing activations that are not sites: (node, why)
        self._by_name = {s.name: s for s in sites}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise CrossneuronError(
                f"input must be (N, {', '.join(map(str, self.input_shape))}) as attached, got {tuple(x.shape)}"
            )
        return self.graph_module(x)

    # -- sites -------------------------------------------------------------------------------
    def site(self, key: int | str | Site) -> Site:
        """A site by index, name or Site."""
        if isinstance(key, Site):
            key = key.index
        if isinstance(key, str):
            if key not in self._by_name:
                near = ", ".join(s.name for s in self.sites[:4])
                raise CrossneuronError(f"unknown site '{key}': site names look like {near}, ...")
            return self._by_name[key]
        if isinstance(key, int) and not isinstance(key, bool) and -len(self.sites) <= key < len(self.sites):
            return self.sites[key]
        raise CrossneuronError(f"unknown site {key!r}: give a name or an index 0..{len(self.sites) - 1}")

    def spatial(self, key: int | str | Site) -> Spatial:
        """The Spatial layer of a site."""
        return getattr(self.graph_module, _SPATIAL)[self.site(key).index]

    @property
    def site_macs(self) -> int:
        return sum(s.macs for s in self.sites)

    # -- masks -------------------------------------------------------------------------------
    def expand_mask(self, key: int | str | Site, mask) -> torch.Tensor:
        """The (C, Hp, Wp) bool mask that ``mask`` (full, (Hp, Wp), (p, p) pattern or None) means."""
        site = self.site(key)
        layer = self.spatial(site)
        shape = tuple(layer.mask.shape)
        p = self.patch_size
        if mask is None:
            return torch.ones(shape, dtype=torch.bool)
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool:
            raise CrossneuronError(f"mask for site '{site.name}' must be bool, got {mask.dtype}")
        mask = mask.cpu()
        if mask.shape == shape:
            return mask.clone()
        if mask.dim() == 2 and mask.shape[0] == mask.shape[1] and mask.shape[0] != p and mask.shape != shape[1:]:
            raise CrossneuronError(
                f"pattern is {mask.shape[0]}x{mask.shape[1]} but the net was attached with patch_size={p}"
            )
        if mask.shape == (p, p):
            mask = mask.repeat(shape[1] // p, shape[2] // p)
        if mask.shape == shape[1:]:
            return mask.expand(shape).clone()
        raise CrossneuronError(
            f"mask for site '{site.name}' must be bool (C, Hp, Wp) = {shape}, a ({p}, {p}) pattern, "
            f"{tuple(shape[1:])} for all channels, or None; got shape {tuple(mask.shape)}"
        )

    def set_mask(self, key: int | str | Site, mask) -> None:
        """Set a site's mask in place; None means no prediction."""
        full = self.expand_mask(key, mask)
        layer = self.spatial(key)
        layer.mask.copy_(full)

    def set_threshold(self, key: int | str | Site, value: float) -> None:
        """A computed position of this site counts as zero when at most ``value`` (0: exactly zero)."""
        value = float(value)
        if not (value >= 0 and value < float("inf")):
            raise CrossneuronError(f"threshold for site '{self.site(key).name}' must be finite and >= 0, got {value}")
        self.spatial(key).threshold = value

    def thresholds(self) -> dict[str, float]:
        """Every site's threshold by site name (0: exactly zero, SPEC 4)."""
        return {s.name: self.spatial(s).threshold for s in self.sites}

    def masks(self) -> dict[str, torch.Tensor]:
        """Every site's full mask by site name (views of the buffers)."""
        return {s.name: self.spatial(s).mask for s in self.sites}

    def enable(self, key: int | str | Site, on: bool = True) -> None:
        """Turn a site's prediction on or off without changing its mask."""
        self.spatial(key).enabled = bool(on)

    # -- statistics --------------------------------------------------------------------------
    def reset_stats(self) -> None:
        for s in self.sites:
            self.spatial(s).reset_stats()

    def stats(self) -> Stats:
        if not self.sites:
            return Stats(images=0, network_macs=self.network_macs, per_site=[])
        layers = [self.spatial(s) for s in self.sites]
        counts = torch.stack([torch.cat([layer.counts, layer.mac_counts]) for layer in layers]).cpu().tolist()
        per_site = []
        for s, layer, (predicted, mispredicted, zeros, images, saved, oracle) in zip(self.sites, layers, counts,
                                                                                     strict=True):  # fmt: skip
            if layer.channel_macs is None:  # one MACs per output for the whole site
                saved, oracle = predicted * s.macs_per_output, zeros * s.macs_per_output
            per_site.append(SiteStats(index=s.index, name=s.name, images=images, positions=s.positions,
                                      site_macs=s.macs, predicted=predicted, mispredicted=mispredicted, zeros=zeros,
                                      macs_saved=saved, oracle_macs=oracle))  # fmt: skip
        return Stats(images=per_site[0].images, network_macs=self.network_macs, per_site=per_site)


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise CrossneuronError(f"input_shape must be (C, H, W) of positive integers, got {input_shape!r}")
    return shape


def _shape_prop(gm, input_shape) -> int:
    """Record every node's output shape for one image, leaving every module's state unchanged;
    returns the network's MACs per image (SPEC 2: flop counter FLOPs / 2 over that same pass)."""
    flags = {m: m.training for m in gm.modules()}
    param = next(gm.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    try:
        gm.eval()
        # torch.fx prints a traceback of its own to stderr before re-raising; the error below says it in a line
        with torch.no_grad(), counting() as counter, contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(gm).propagate(torch.zeros(1, *input_shape, device=device, dtype=dtype))
        return macs_of(counter)
    except Exception as exc:  # noqa: BLE001 - one clear line for a shape that does not fit
        root = exc.__cause__ or exc
        reason = " ".join(str(root).split())[:200]
        raise CrossneuronError(f"the model does not run on input_shape {input_shape}: {reason}") from None
    finally:
        for m, training in flags.items():
            m.training = training


def attach(
    model: nn.Module,
    input_shape: Sequence[int],
    patch_size: int = 2,
    leaf_modules: Iterable[str | type] = (),
    activations: Iterable[Activation] = (),
) -> PredictiveNet:
    """Trace ``model`` and insert a Spatial layer after every site (all with no prediction).

    ``model`` is left untouched: the net shares its submodules and parameters. ``activations``
    declares activations of the user's own that output exact zeros (module classes, which then
    trace as leaves; functions; tensor method names), next to ReLU, ReLU6, Hardtanh(0, x) and
    clamp(min=0).
    """
    p = check_patch_size(patch_size)
    shape = _check_input_shape(input_shape)
    activations = list(activations)
    functions = [a for a in activations if callable(a) and not isinstance(a, type)]
    gm = trace(model, [*leaf_modules, *(a for a in activations if isinstance(a, type))], functions)
    macs = _shape_prop(gm, shape)
    sites = find_sites(gm, activations)
    skipped = skipped_activations(gm, activations)  # zero-producing activations that are not sites, and why
    if not sites:
        smooth = smooth_activations(gm)
        why = f"; {', '.join(smooth)} never output exact zeros" if smooth else ""
        raise CrossneuronError(
            f"{type(model).__name__} has no site: no zero-producing activation after a conv (ReLU, ReLU6, "
            f"Hardtanh or clamp with lower bound 0, or one declared with attach(..., activations=[...]) fed "
            f"by a conv through only BatchNorm, identity-like ops, residual adds, channel concatenations and "
            f"shuffles; leaf modules hide what "
            f"is inside them){why}"
        )
    # a site's ReLU output feeds only its Spatial layer, which may therefore overwrite it
    layers = nn.ModuleList(Spatial(s.shape, p, s.macs_per_output or s.per_channel, inplace=True) for s in sites)
    param = next(model.parameters(), None)
    if param is not None:
        layers.to(param.device)
    gm.add_submodule(_SPATIAL, layers)
    nodes = {n.name: n for n in gm.graph.nodes}
    for site in sites:
        relu = nodes[site.node]
        with gm.graph.inserting_after(relu):
            new = gm.graph.call_module(f"{_SPATIAL}.{site.index}", (relu,))
        new.meta["tensor_meta"] = relu.meta["tensor_meta"]  # same shape: later walks read it
        relu.replace_all_uses_with(new, delete_user_cb=lambda user, new=new: user is not new)
    gm.recompile()
    net = PredictiveNet(gm, sites, p, shape, macs)
    net.skipped = skipped
    return net
