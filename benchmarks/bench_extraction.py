"""Throughput and memory of vogflow's streaming extraction against its floor and references.

Run from the repository root (the default run takes about five minutes on a busy 2-core CPU;
defaults: K=5, LeNet 1x28x28 N=512 batch 128, ResNet-18 3x32x32 N=32 batch 32, batch-size-1 loop
on 64 / 4 examples, memory at N, 2N, 4N from 512 / 16)::

    python benchmarks/bench_extraction.py --threads 1

    # larger / GPU runs, e.g.
    python benchmarks/bench_extraction.py --device cuda --n 8192 2048 --batch-size 512 \
        --precision fp32 bf16 tf32 --repeats 5

What is measured, in one process and one run (timings interleaved, medians over ``--repeats``):

* ``floor``: K plain forward + input-backward passes per example, the most direct way: for each
  batch, for each checkpoint, forward, sum of the gathered label logits, ``autograd.grad``
  w.r.t. the input; no reduction, nothing kept.
* ``vogflow extract``: :func:`vogflow.scoring.stream.extract` with one label mode (like for
  like with the floor: one backward per checkpoint) and with both label modes.
* ``checkpoint-major``: the authors' layout: for each checkpoint, load its weights into one model,
  loop over the data with ``.backward()`` (parameter gradients on, as in their code) and keep
  every example's full ``C x H x W`` gradient map; stack ``(K, N, C, H, W)`` and reduce to VoG at
  the end. Also the same with frozen parameters (input gradients only) and with batch size 1
  (a per-example loop, on a subset).
* ``torch.func``: the K checkpoints stacked with ``stack_module_state`` and ``vmap`` over
  ``functional_call`` + ``grad`` (a comparison only; vogflow does not use it).
* a trained model: a LeNet trained for 10 epochs on digits upsampled to 1x28x28 (K=5
  checkpoints: epochs 1, 2, 3, 9, 10), on its train and test split: floor, ``extract`` with one
  and two label modes. ``pred`` mode reuses ``label``'s gradients wherever the final prediction
  is the label, so its cost depends on how often it is not; a random model's prediction almost
  never is the label, which the random-model rows measure (``--no-trained`` skips these rows).
* peak memory of ``extract`` and of the checkpoint-major reference at N, 2N and 4N examples, each
  in a fresh subprocess: peak RSS (``VmHWM``, reset after setup) minus the RSS after model and
  data setup; on CUDA also ``torch.cuda.max_memory_allocated`` above the allocation after setup.

Every method's scores are asserted equal to ``extract``'s (all windows, ``label`` mode) before any
number is printed; two-mode ``pred`` scores also against a ``pred``-only extraction. On CUDA,
``--precision bf16 tf32`` adds rows with the Spearman rank agreement of each precision's scores
with fp32; on the CPU those rows are skipped with a note.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from vogflow.common.runtime import resolve_device
from vogflow.config.names import WINDOWS
from vogflow.models.architectures import build_model
from vogflow.scoring.stream import extract, tensor_batches
from vogflow.scoring.vog import vog_raw, window_indices

INPUT_SHAPES = {"lenet": (1, 28, 28), "mlp": (1, 28, 28)}  # everything else: (3, 32, 32)
DEFAULT_N = {"lenet": 512, "resnet18": 32}
DEFAULT_N_BS1 = {"lenet": 64, "resnet18": 4}
DEFAULT_MEM_N = {"lenet": 512, "resnet18": 16}
DEFAULT_BATCH = {"lenet": 128, "resnet18": 32}
NUM_CLASSES = 10
MIB = 2.0**20


# --------------------------------------------------------------------------------------------
# Setup: K perturbed checkpoints of one random model, random normalised inputs.


def channel_mean(grads: np.ndarray, *, channel_axis: int | None) -> np.ndarray:
    """Average signed gradients over the colour channels (paper: ``S`` becomes ``H x W``).

    ``channel_axis=None`` leaves the array unchanged (inputs without channels, e.g. 2-D points).
    """
    if channel_axis is None:
        return grads
    return grads.mean(axis=channel_axis)


def input_shape(name: str) -> tuple[int, int, int]:
    return INPUT_SHAPES.get(name, (3, 32, 32))


def checkpoint_states(name: str, k: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """K state dicts: one random model, each parameter perturbed independently per checkpoint."""
    torch.manual_seed(seed)
    base = build_model(name, input_shape(name), NUM_CLASSES)
    gen = torch.Generator().manual_seed(seed + 1)
    states = []
    for _ in range(k):
        state = copy.deepcopy(base.state_dict())
        for key, p in base.named_parameters():
            scale = float(p.detach().std()) if p.numel() > 1 else 0.0
            noise = torch.randn(p.shape, generator=gen)
            state[key] = p.detach() + 0.05 * (scale if scale > 0 else 1.0) * noise
        states.append(state)
    return states


def frozen_models(name: str, states: Sequence[dict], dev: torch.device) -> list[nn.Module]:
    """The checkpoints as K models on ``dev``, in eval mode, parameters not requiring grad."""
    models = []
    for state in states:
        model = build_model(name, input_shape(name), NUM_CLASSES)
        model.load_state_dict(state)
        model.to(dev).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        models.append(model)
    return models


def make_data(name: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 2)
    x = torch.randn(n, *input_shape(name), generator=gen)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    return x, y


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# --------------------------------------------------------------------------------------------
# The methods. Each returns {window: (N,) scores} of `label` mode (the floor returns nothing).


def floor(models, x, y, bs, dev) -> None:
    """K forward + input-backward passes per example, nothing reduced or kept."""
    for i in range(0, len(y), bs):
        xb = x[i : i + bs].to(dev, non_blocking=True)
        yb = y[i : i + bs].to(dev, non_blocking=True)
        for model in models:
            xi = xb.detach().requires_grad_(True)
            logits = model(xi)
            torch.autograd.grad(logits.gather(1, yb[:, None]).sum(), xi)
    sync(dev)


def run_extract(models, x, y, bs, dev, modes=("label",), precision="fp32"):
    result = extract(
        models,
        tensor_batches(x, y, bs),
        num_examples=len(y),
        num_batches=-(-len(y) // bs),
        label_modes=modes,
        device=dev,
        precision=precision,
        progress=False,
    )
    sync(dev)
    return result


def checkpoint_major(ref_model, states, x, y, bs, dev, *, param_grads=True):
    """The authors' layout: per checkpoint, the whole dataset's full gradient maps, kept."""
    ref_model.to(dev).eval()
    for p in ref_model.parameters():
        p.requires_grad_(param_grads)
    per_checkpoint = []
    for state in states:
        ref_model.load_state_dict(state)
        grads = []
        for i in range(0, len(y), bs):
            xb = x[i : i + bs].to(dev).clone().requires_grad_(True)
            yb = y[i : i + bs].to(dev)
            logits = ref_model(xb)
            selected = logits.gather(1, yb[:, None])[:, 0]
            selected.backward(torch.ones_like(selected))
            grads.append(xb.grad.detach().cpu().numpy())
            ref_model.zero_grad(set_to_none=True)
        per_checkpoint.append(np.concatenate(grads))  # (N, C, H, W)
    stack = np.stack(per_checkpoint)  # (K, N, C, H, W)
    maps = channel_mean(stack, channel_axis=2)
    k = len(states)
    return {w: vog_raw(maps[window_indices(k, w)]) for w in WINDOWS}


def func_vmap(models, x, y, bs, dev):
    """K checkpoints stacked, ``vmap`` over ``functional_call`` + ``grad`` w.r.t. the input."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    params, buffers = stack_module_state(list(models))
    base = copy.deepcopy(models[0]).to("meta")

    def logit_sum(p, b, xb, yb):
        return functional_call(base, (p, b), (xb,)).gather(1, yb[:, None]).sum()

    all_grads = vmap(grad(logit_sum, argnums=2), in_dims=(0, 0, None, None))
    k = len(models)
    chosen = {w: torch.as_tensor(window_indices(k, w), device=dev) for w in WINDOWS}
    out: dict[str, list[torch.Tensor]] = {w: [] for w in WINDOWS}
    for i in range(0, len(y), bs):
        xb = x[i : i + bs].to(dev)
        yb = y[i : i + bs].to(dev)
        g = all_grads(params, buffers, xb, yb)  # (K, B, C, H, W)
        maps = g.mean(2).reshape(k, len(yb), -1)
        for w, idx in chosen.items():
            part = maps[idx]
            part = part - part[:1]
            out[w].append(part.std(dim=0, unbiased=False).mean(dim=1).double().cpu())
    sync(dev)
    return {w: torch.cat(v).numpy() for w, v in out.items()}


# --------------------------------------------------------------------------------------------
# Checks and timing.


def assert_same(name: str, got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> str:
    """``got[window]`` must equal ``want[window]`` to float32 tolerance; returns the max rel err.

    VoG is a spread of nearly equal float32 gradients, so kernels that sum in another order (batch
    size 1, the grouped convolutions of ``vmap``) differ by a few 1e-4 relative; 1e-3 allows that
    and still fails on any wrong formula (sample std, a wrong window or label moves it by >1%).
    """
    worst = 0.0
    for w in WINDOWS:
        a, b = np.asarray(got[w], dtype=np.float64), np.asarray(want[w], dtype=np.float64)
        assert a.shape == b.shape, f"{name}: {w} shape {a.shape} != {b.shape}"
        np.testing.assert_allclose(
            a, b, rtol=1e-3, atol=1e-6 * float(np.abs(b).max()), err_msg=f"{name} {w}"
        )
        worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30))))
    return f"{worst:.0e}"


def label_scores(result) -> dict[str, np.ndarray]:
    return {w: result.vog_raw[f"{w}_label"] for w in WINDOWS}


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_model(name: str, args, dev: torch.device) -> tuple[list[dict], list[str]]:
    n = per_model(args.n, name, DEFAULT_N)
    n_bs1 = min(per_model(args.n_bs1, name, DEFAULT_N_BS1), n)
    bs, k = min(per_model(args.batch_size, name, DEFAULT_BATCH), n), args.k
    states = checkpoint_states(name, k, args.seed)
    models = frozen_models(name, states, dev)
    ref_model = build_model(name, input_shape(name), NUM_CLASSES)
    x, y = make_data(name, n, args.seed)
    xs, ys = x[:n_bs1], y[:n_bs1]

    methods: dict[str, tuple[Callable[[], object], int, int]] = {
        "floor": (lambda: floor(models, x, y, bs, dev), n, bs),
        "extract_1": (lambda: run_extract(models, x, y, bs, dev), n, bs),
        "extract_2": (lambda: run_extract(models, x, y, bs, dev, ("label", "pred")), n, bs),
        "ref_authors": (lambda: checkpoint_major(ref_model, states, x, y, bs, dev), n, bs),
        "ref_frozen": (
            lambda: checkpoint_major(ref_model, states, x, y, bs, dev, param_grads=False),
            n,
            bs,
        ),
    }
    if n_bs1 > 0:
        methods["ref_bs1"] = (lambda: checkpoint_major(ref_model, states, xs, ys, 1, dev), n_bs1, 1)
    if not args.no_func:
        methods["func"] = (lambda: func_vmap(models, x, y, bs, dev), n, bs)

    # Warm-up (lazy library initialisation) on one batch each, then the correctness checks.
    wx, wy = x[: min(bs, 8)], y[: min(bs, 8)]
    floor(models, wx, wy, bs, dev)
    run_extract(models, wx, wy, bs, dev, ("label", "pred"))
    checkpoint_major(ref_model, states, wx, wy, bs, dev)
    checkpoint_major(ref_model, states, wx, wy, bs, dev, param_grads=False)
    checkpoint_major(ref_model, states, wx[:2], wy[:2], 1, dev)
    if not args.no_func:
        func_vmap(models, wx, wy, bs, dev)
    times: dict[str, list[float]] = {m: [] for m in methods}
    outputs: dict[str, object] = {}
    names = list(methods)
    for r in range(args.repeats):
        # Interleave the repeats and rotate the order, so drift on a shared machine hits all.
        for m in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            seconds, out = timed(methods[m][0])
            times[m].append(seconds)
            outputs[m] = out
            print(f"  {name} {m} repeat {r + 1}: {methods[m][1] / seconds:.1f} img/s", flush=True)

    want = label_scores(outputs["extract_1"])
    alone = run_extract(models, x, y, bs, dev, ("pred",))
    pred_err = assert_same(
        "extract (2 modes) pred",
        {w: outputs["extract_2"].vog_raw[f"{w}_pred"] for w in WINDOWS},
        {w: alone.vog_raw[f"{w}_pred"] for w in WINDOWS},
    )
    label_err = assert_same("extract (2 modes)", label_scores(outputs["extract_2"]), want)
    checks = {
        "extract_1": "reference",
        "extract_2": f"label {label_err}, pred vs pred-only {pred_err}",
        "ref_authors": assert_same("checkpoint-major", outputs["ref_authors"], want),
        "ref_frozen": assert_same("checkpoint-major frozen", outputs["ref_frozen"], want),
    }
    # The other way round too: vogflow against the reference computed in float64.
    assert_same("extract vs checkpoint-major", want, outputs["ref_authors"])
    if "ref_bs1" in outputs:
        sub = {w: v[:n_bs1] for w, v in want.items()}
        checks["ref_bs1"] = assert_same("checkpoint-major bs=1", outputs["ref_bs1"], sub)
    if "func" in outputs:
        checks["func"] = assert_same("torch.func", outputs["func"], want)

    # Paired per-repeat ratios (same repeat, same machine state), then the median.
    def paired(a: str, b: str) -> float:
        ra = [methods[a][1] / t for t in times[a]]
        rb = [methods[b][1] / t for t in times[b]]
        return statistics.median(x / y for x, y in zip(ra, rb, strict=True))

    labels = {
        "floor": "floor: K x (forward + input grad), no reduction",
        "extract_1": "vogflow `extract`, 1 label mode",
        "extract_2": "vogflow `extract`, 2 label modes",
        "ref_authors": "checkpoint-major, authors' style (param grads on)",
        "ref_frozen": "checkpoint-major, params frozen",
        "ref_bs1": "checkpoint-major, batch size 1 (subset)",
        "func": "`torch.func` vmap over K stacked checkpoints",
    }
    rows = []
    for m in names:
        rate = statistics.median(methods[m][1] / t for t in times[m])
        rows.append(
            {
                "model": name,
                "method": labels[m],
                "key": m,
                "n": methods[m][1],
                "batch": methods[m][2],
                "img_s": rate,
                "vs_floor": paired(m, "floor"),
                "speedup": paired("extract_1", m) if m.startswith(("ref", "func")) else None,
                "check": checks.get(m, "-"),
            }
        )

    notes = precision_rows(name, args, dev, models, x, y, rows, outputs["extract_1"])
    return rows, notes


def precision_rows(name, args, dev, models, x, y, rows, fp32_result) -> list[str]:
    wanted = [p for p in args.precision if p != "fp32"]
    if not wanted:
        return []
    if dev.type != "cuda":
        return [f"{name}: precision rows ({', '.join(wanted)}) skipped: they need a CUDA device."]
    from scipy.stats import spearmanr

    floor_row = next(r for r in rows if r["key"] == "floor")
    bs = floor_row["batch"]
    for precision in wanted:
        rates = []
        for _ in range(args.repeats):
            seconds, result = timed(
                lambda p=precision: run_extract(models, x, y, bs, dev, precision=p)
            )
            rates.append(len(y) / seconds)
        rho = min(
            spearmanr(result.vog_raw[key], fp32_result.vog_raw[key]).statistic
            for key in fp32_result.vog_raw
        )
        rows.append(
            {
                "model": name,
                "method": f"vogflow `extract`, 1 label mode, {precision}",
                "key": f"extract_{precision}",
                "n": len(y),
                "batch": bs,
                "img_s": statistics.median(rates),
                "vs_floor": statistics.median(rates) / floor_row["img_s"],
                "speedup": None,
                "check": f"Spearman vs fp32 >= {rho:.4f}",
            }
        )
    return []


# --------------------------------------------------------------------------------------------
# A trained model: where `pred` mode's cost depends on how often the prediction is the label.


def trained_lenet(workdir: str) -> tuple[list[nn.Module], object]:
    """K=5 checkpoints of a LeNet trained on digits upsampled to 1x28x28 (the shape of the
    random ``lenet`` rows), epochs 1, 2, 3, 9, 10; and the dataset."""
    import dataclasses

    from vogflow.checkpoints.files import load_run_models
    from vogflow.config.schema import CheckpointConfig, DataConfig, ModelConfig, TrainConfig
    from vogflow.data import Split, load_dataset
    from vogflow.training.train import train_run

    def up(split):
        x = torch.nn.functional.interpolate(
            torch.from_numpy(split.x), size=(28, 28), mode="bilinear", align_corners=False
        )
        return Split(x.numpy(), split.y)

    digits = load_dataset(DataConfig(name="digits"))
    digits = dataclasses.replace(digits, train=up(digits.train), test=up(digits.test))
    recipe = TrainConfig(epochs=10, milestones=(7,), seed=0, device="cpu")
    schedule = CheckpointConfig(early=3, every=10, late=2)
    train_run(digits, ModelConfig(name="lenet"), recipe, schedule, workdir, echo=print)
    models, _ = load_run_models(workdir)
    return models, digits


def bench_trained(args, dev: torch.device) -> tuple[list[dict], list[str]]:
    """floor, 1 and 2 label modes of ``extract`` on a trained LeNet, train and test split."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        models, digits = trained_lenet(tmp)
    for model in models:
        model.to(dev).eval()
        for p in model.parameters():
            p.requires_grad_(False)
    bs = min(per_model(args.batch_size, "lenet", DEFAULT_BATCH), 128)
    rows, notes = [], []
    for split in ("train", "test"):
        x = torch.from_numpy(digits.split(split).x)
        y = torch.from_numpy(digits.split(split).y).long()
        name = f"lenet, trained on digits ({split})"
        wx, wy = x[:bs], y[:bs]
        floor(models, wx, wy, bs, dev)
        run_extract(models, wx, wy, bs, dev, ("label", "pred"))
        methods = {
            "floor": lambda x=x, y=y: floor(models, x, y, bs, dev),
            "extract_1": lambda x=x, y=y: run_extract(models, x, y, bs, dev),
            "extract_2": lambda x=x, y=y: run_extract(models, x, y, bs, dev, ("label", "pred")),
        }
        times: dict[str, list[float]] = {m: [] for m in methods}
        outputs: dict[str, object] = {}
        names = list(methods)
        for r in range(args.repeats):
            for m in names[r % len(names) :] + names[: r % len(names)]:
                gc.collect()
                seconds, outputs[m] = timed(methods[m])
                times[m].append(seconds)
                print(f"  {name} {m} repeat {r + 1}: {len(y) / seconds:.1f} img/s", flush=True)
        two = outputs["extract_2"]
        # `pred` scores against the full `pred`-mode computation (every row's own backward).
        alone = run_extract(models, x, y, bs, dev, ("pred",))
        pred_err = assert_same(
            "extract (2 modes) pred",
            {w: two.vog_raw[f"{w}_pred"] for w in WINDOWS},
            {w: alone.vog_raw[f"{w}_pred"] for w in WINDOWS},
        )
        label_err = assert_same(
            "extract (2 modes) label", label_scores(two), label_scores(outputs["extract_1"])
        )
        differ = float((torch.from_numpy(two.pred) != y).float().mean())
        notes.append(
            f"{name}: N={len(y)}; the final checkpoint's prediction differs from the label on "
            f"{int(differ * len(y))} examples ({100 * differ:.1f} %)."
        )

        def paired(a: str, b: str, times=times) -> float:
            return statistics.median(tb / ta for ta, tb in zip(times[a], times[b], strict=True))

        checks = {
            "extract_1": "reference",
            "extract_2": f"label {label_err}, pred vs pred-only {pred_err}",
        }
        labels = {
            "floor": "floor: K x (forward + input grad), no reduction",
            "extract_1": "vogflow `extract`, 1 label mode",
            "extract_2": "vogflow `extract`, 2 label modes",
        }
        for m in names:
            rows.append(
                {
                    "model": name,
                    "method": labels[m],
                    "key": m,
                    "n": len(y),
                    "batch": bs,
                    "img_s": statistics.median(len(y) / t for t in times[m]),
                    "vs_floor": paired(m, "floor"),
                    "speedup": None,
                    "check": checks.get(m, "-"),
                }
            )
    return rows, notes


# --------------------------------------------------------------------------------------------
# Memory: one fresh subprocess per (model, method, N).


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def memory_child(args) -> None:
    """Child process: set up, warm up, then the peak memory of one method at one N, as JSON."""
    name, method, n = args.memory_child, args.mem_method, args.mem_size
    dev = resolve_device(args.device)
    states = checkpoint_states(name, args.k, args.seed)
    x, y = make_data(name, n, args.seed)
    bs = per_model(args.batch_size, name, DEFAULT_BATCH)
    if method == "extract":
        models = frozen_models(name, states, dev)

        def run():
            return run_extract(models, x, y, bs, dev)
    else:
        ref_model = build_model(name, input_shape(name), NUM_CLASSES)

        def run():
            return checkpoint_major(ref_model, states, x, y, bs, dev)

    # Warm-up on one batch (lazy library state), so the baseline holds what any N needs.
    if method == "extract":
        run_extract(models, x[:bs], y[:bs], bs, dev)
    else:
        checkpoint_major(ref_model, states, x[:bs], y[:bs], bs, dev)
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        gpu_base = torch.cuda.memory_allocated(dev)
    base_kib = _status_kib("VmRSS")
    if not _reset_peak():  # fall back: the peak so far (may include setup transients)
        base_kib = max(base_kib, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    out = run()
    peak_kib = _status_kib("VmHWM")
    if method == "extract":
        out_bytes = sum(v.nbytes for v in out.arrays().values())
    else:
        out_bytes = sum(v.nbytes for v in out.values())
    kept = args.k * n * int(np.prod(input_shape(name))) * 4 if method == "reference" else 0
    report = {
        "kept_mib": kept / MIB,
        "peak_mib": (peak_kib - base_kib) / 1024,
        "out_mib": out_bytes / MIB,
        "gpu_peak_mib": (
            (torch.cuda.max_memory_allocated(dev) - gpu_base) / MIB if dev.type == "cuda" else None
        ),
    }
    print("MEMORY " + json.dumps(report), flush=True)


def memory_rows(name: str, args) -> list[dict]:
    n = per_model(args.mem_n, name, DEFAULT_MEM_N)
    modes = ("default", "fixed") if args.malloc == "both" else (args.malloc,)
    rows = []
    for malloc, method in ((a, m) for a in modes for m in ("extract", "reference")):
        results = {}
        for size in (n, 2 * n, 4 * n):
            cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", name]
            cmd += ["--mem-method", method, "--mem-size", str(size), "--k", str(args.k)]
            cmd += ["--batch-size", str(min(per_model(args.batch_size, name, DEFAULT_BATCH), n))]
            cmd += ["--device", args.device]
            cmd += ["--seed", str(args.seed)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            # `default`: glibc as users get it (dynamic mmap threshold: RSS includes the heap that
            # fragmentation keeps). `fixed`: a fixed mmap threshold, so large blocks are mapped and
            # unmapped and the peak follows the live bytes more closely.
            env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
            if malloc == "fixed":
                env.update(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="0")
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            line = [s for s in proc.stdout.splitlines() if s.startswith("MEMORY ")]
            if proc.returncode != 0 or not line:
                raise RuntimeError(f"memory child failed:\n{proc.stdout}\n{proc.stderr}")
            results[size] = json.loads(line[-1][len("MEMORY ") :])
            print(f"  {name} memory {malloc} {method} N={size}: {results[size]}", flush=True)
        work = {s: r["peak_mib"] - r["out_mib"] for s, r in results.items()}
        for size, r in results.items():
            rows.append(
                {
                    "model": name,
                    "method": "vogflow `extract`" if method == "extract" else "checkpoint-major",
                    "n": size,
                    "malloc": malloc,
                    "peak": r["peak_mib"],
                    "gpu": r["gpu_peak_mib"],
                    "out": r["out_mib"],
                    "kept": r["kept_mib"],
                    "work": work[size],
                    # a percentage of (almost) nothing says nothing: left out below 1 MiB
                    "growth": (work[size] - work[n]) / work[n] if work[n] >= 1 else None,
                    "growth_mib": work[size] - work[n],
                }
            )
    return rows


# --------------------------------------------------------------------------------------------
# Output.


def per_model(values: list[int] | None, name: str, defaults: dict[str, int]) -> int:
    if values:
        return values[0] if len(values) == 1 else values[_model_index[name]]
    return defaults.get(name, min(defaults.values()))


_model_index: dict[str, int] = {}


def speed_table(rows: list[dict]) -> str:
    out = [
        "| model | method | N | batch | images/s (median) | vs floor | vogflow 1-mode speed-up "
        "| scores check (max rel. err vs extract) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        speed = f"{r['speedup']:.2f}x" if r["speedup"] is not None else ""
        out.append(
            f"| {r['model']} | {r['method']} | {r['n']} | {r['batch']} | {r['img_s']:.1f} "
            f"| {r['vs_floor']:.3f} | {speed} | {r['check']} |"
        )
    return "\n".join(out)


def memory_table(rows: list[dict]) -> str:
    out = [
        "| model | method | malloc | N | peak RSS above setup (MiB) | GPU peak above setup (MiB) "
        "| output arrays (MiB) | peak minus outputs (MiB) | growth of that from N "
        "| K x N x C x H x W float32 maps kept (MiB) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        gpu = f"{r['gpu']:.1f}" if r["gpu"] is not None else "-"
        out.append(
            f"| {r['model']} | {r['method']} | {r['malloc']} | {r['n']} | {r['peak']:.1f} | {gpu} "
            f"| {r['out']:.2f} | {r['work']:.1f} | {r['growth_mib']:+.1f} MiB "
            f"({'n/a' if r['growth'] is None else format(100 * r['growth'], '+.0f') + '%'}) "
            f"| {r['kept']:.1f} |"
        )
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["lenet", "resnet18"])
    p.add_argument("--k", type=int, default=5, help="checkpoints (default 5)")
    p.add_argument("--n", type=int, nargs="+", help="examples, one value or one per model")
    p.add_argument("--n-bs1", type=int, nargs="+", help="subset for the batch-size-1 loop")
    p.add_argument("--mem-n", type=int, nargs="+", help="memory: N (also run at 2N and 4N)")
    p.add_argument("--batch-size", type=int, nargs="+", help="one value or one per model")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--precision",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "bf16", "tf32"],
        help="extra precisions (CUDA only) compared with fp32 by Spearman rank agreement",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-func", action="store_true", help="skip the torch.func variant")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument(
        "--no-trained", action="store_true", help="skip the trained-LeNet rows (train ~20 s)"
    )
    p.add_argument(
        "--malloc",
        choices=["default", "fixed", "both"],
        default="both",
        help="memory children: glibc defaults, a fixed mmap threshold, or both (default)",
    )
    p.add_argument("--profile", action="store_true", help="print a profile of extract vs floor")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    p.add_argument("--mem-method", help=argparse.SUPPRESS)
    p.add_argument("--mem-size", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def profile(name: str, args, dev: torch.device) -> None:
    """Operator-level profile of one floor pass and one 1-mode extract, same data."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    n = per_model(args.n, name, DEFAULT_N)
    bs = min(per_model(args.batch_size, name, DEFAULT_BATCH), n)
    models = frozen_models(name, checkpoint_states(name, args.k, args.seed), dev)
    x, y = make_data(name, n, args.seed)
    floor(models, x[:bs], y[:bs], bs, dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    for label, fn in (
        ("floor", lambda: floor(models, x, y, bs, dev)),
        ("extract (1 mode)", lambda: run_extract(models, x, y, bs, dev)),
    ):
        with torch_profile(activities=activities) as prof:
            fn()
        print(f"\n### profile: {name} {label}\n")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    # The engine's per-window reduction, (K, B, pixels) -> (B, pixels), two ways.
    part = torch.randn(args.k, bs, input_shape(name)[1] * input_shape(name)[2], device=dev)
    ways = {
        "part.std(dim=0, unbiased=False)": lambda: part.std(dim=0, unbiased=False),
        "(part - part.mean(0)).square_().mean(0).sqrt_()": lambda: (
            (part - part.mean(0)).square_().mean(0).sqrt_()
        ),
    }
    print(f"\n### reduction of one ({args.k}, {bs}, {part.shape[2]}) window\n")
    for label, fn in ways.items():
        fn()
        sync(dev)
        seconds, _ = timed(lambda f=fn: [f() for _ in range(20)] and sync(dev))
        print(f"{label}: {1e3 * seconds / 20:.2f} ms")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    _model_index.update({m: i for i, m in enumerate(args.models)})
    if args.memory_child:
        memory_child(args)
        return
    dev = resolve_device(args.device)
    args.device = str(dev)
    print(
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {dev}"
        + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
        flush=True,
    )
    if args.profile:
        for name in args.models:
            profile(name, args, dev)
        return
    started = time.perf_counter()
    rows, notes, mem = [], [], []
    for name in args.models:
        r, nt = bench_model(name, args, dev)
        rows += r
        notes += nt
    if not args.no_trained:
        r, nt = bench_trained(args, dev)
        rows += r
        notes += nt
    if not args.no_memory:
        for name in args.models:
            mem += memory_rows(name, args)
    print(f"\n## Throughput (K={args.k}, medians of {args.repeats} interleaved repeats)\n")
    print(speed_table(rows))
    for note in notes:
        print(f"\n{note}")
    if mem:
        print(f"\n## Peak memory (K={args.k}, fresh subprocess each)\n")
        print(memory_table(mem))
    print(f"\nwall time {time.perf_counter() - started:.0f} s: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
