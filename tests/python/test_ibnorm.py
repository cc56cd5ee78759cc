"""The Python package `ibnorm` against independent references: PyTorch's own layers (nn.LayerNorm,
nn.BatchNorm1d, nn.GroupNorm: the same code as LibTorch's), numpy implementations of the SPEC
formulas, finite differences (gradcheck), and the `ibn` command line on the same HDF5 data.

Run by CTest (test `python`) with PYTHONPATH=build/python and IBN=build/ibn."""
import json
import math
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

import ibnorm

IBN = os.environ.get("IBN", "")
torch.set_num_threads(1)  # as the CLI under --threads 1: the same summation order

# SPEC section 2: the compressions, written from the table (not from the C++ source).
DELTA = 1e-3


def psi(variant, z, lam):
    if lam == 0:
        return z
    if variant == "s":
        p = 1.0 / (1.0 + lam)
        return np.sign(z) * ((np.abs(z) + DELTA) ** p - DELTA ** p)
    if variant == "l":
        return np.sign(z) * np.log1p(lam * np.abs(z)) / lam
    return np.tanh(lam * z) / lam


def standardize(x, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def reference(spec, x, lam=0.0):
    """SPEC section 1 for [N, D] input on the token area, with gamma = 1, beta = 0."""
    if spec == "layernorm":
        return standardize(x)
    if spec == "rmsnorm":
        return x / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + 1e-5)
    if spec.startswith("ibnorm-"):
        return standardize(psi(spec[-1], standardize(x), lam))
    if spec == "ln-tanh":
        return psi("t", standardize(x), lam)
    if spec == "dyt":
        return np.tanh(0.5 * x)
    raise ValueError(spec)


def sample(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64) * 3 + 1


# --- Norm: forward against references ------------------------------------------------------------

@pytest.mark.parametrize("spec,lam", [("layernorm", 0), ("rmsnorm", 0), ("dyt", 0), ("ibnorm-s", 0.5), ("ibnorm-s", 2),
                                      ("ibnorm-l", 0.5), ("ibnorm-l", 2), ("ibnorm-t", 0.5), ("ibnorm-t", 2),
                                      ("ln-tanh", 2)])
def test_norm_matches_the_spec_formulas(spec, lam):
    x = sample(16, 12)
    full = spec if lam == 0 else f"{spec}:lambda={lam}"
    y = ibnorm.Norm(full, 12).double()(x)
    np.testing.assert_allclose(y.detach().numpy(), reference(spec, x.numpy(), lam), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("spec,lam", [("layernorm", 0), ("rmsnorm", 0), ("ibnorm-s", 2), ("ibnorm-l", 2), ("ibnorm-t", 2)])
def test_norm_gradients_match_the_spec_formulas_by_central_differences(spec, lam):
    # d/dx of sum(g * y(x)) from autograd through the operator, against central differences of
    # the numpy formula: the gradients checked against an implementation that shares no code.
    x = sample(4, 6, seed=3)
    g = sample(4, 6, seed=4).numpy()
    full = spec if lam == 0 else f"{spec}:lambda={lam}"
    xs = x.clone().requires_grad_(True)
    (ibnorm.Norm(full, 6).double()(xs) * torch.from_numpy(g)).sum().backward()
    numeric = np.zeros_like(g)
    h = 1e-6
    for index in np.ndindex(*g.shape):
        up, down = x.numpy().copy(), x.numpy().copy()
        up[index] += h
        down[index] -= h
        numeric[index] = ((reference(spec, up, lam) - reference(spec, down, lam)) * g).sum() / (2 * h)
    np.testing.assert_allclose(xs.grad.numpy(), numeric, rtol=1e-6, atol=1e-7)


def test_lambda_zero_is_the_variance_centric_norm():
    x = sample(8, 16)
    layernorm = ibnorm.Norm("layernorm", 16).double()(x)
    for variant in "slt":
        np.testing.assert_allclose(ibnorm.Norm(f"ibnorm-{variant}:lambda=0", 16).double()(x).detach().numpy(),
                                   layernorm.detach().numpy(), rtol=0, atol=1e-12)


def test_layernorm_and_groupnorm_equal_pytorchs_own_layers():
    x = sample(6, 10)
    ours, theirs = ibnorm.Norm("layernorm", 10).double(), torch.nn.LayerNorm(10).double()
    with torch.no_grad():
        for layer in (ours, theirs):
            layer.weight.copy_(torch.linspace(0.5, 2, 10))
            layer.bias.copy_(torch.linspace(-1, 1, 10))
    assert torch.equal(ours(x), theirs(x))  # the same ATen kernel (layer_norm) on the CPU
    images = sample(3, 8, 4, 5)
    ours, theirs = ibnorm.Norm("groupnorm:groups=2", 8).double(), torch.nn.GroupNorm(2, 8).double()
    torch.testing.assert_close(ours(images), theirs(images), rtol=1e-12, atol=1e-12)


def test_batchnorm_trains_and_evaluates_as_pytorchs_batchnorm():
    ours, theirs = ibnorm.Norm("batchnorm", 5).double(), torch.nn.BatchNorm1d(5).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())  # LibTorch's names, in its order
    for step in range(3):
        x = sample(32, 5, seed=step)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(ours, name), getattr(theirs, name), rtol=1e-12, atol=1e-14)
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 3
    ours.eval(), theirs.eval()
    x = sample(7, 5, seed=9)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)
    assert int(ours.num_batches_tracked) == 3  # eval moves nothing


def test_state_dict_round_trips_and_parameters_train():
    source = ibnorm.Norm("ibnorm-t:lambda=2:area=batch", 4).double()
    optimizer = torch.optim.SGD(source.parameters(), lr=0.1)
    for step in range(2):
        optimizer.zero_grad()
        source(sample(16, 4, seed=step)).pow(3).sum().backward()
        optimizer.step()
    assert not torch.equal(source.weight, torch.ones(4, dtype=torch.float64))  # gradients reached gamma
    copy = ibnorm.Norm("ibnorm-t:lambda=2:area=batch", 4).double()
    copy.load_state_dict(source.state_dict())
    source.eval(), copy.eval()
    x = sample(5, 4, seed=7)
    assert torch.equal(source(x), copy(x))
    dyt = ibnorm.Norm("dyt", 3)
    assert [name for name, _ in dyt.named_parameters()] == ["alpha", "weight", "bias"]
    dyt(torch.randn(4, 3)).sum().backward()
    assert dyt.alpha.grad is not None and dyt.alpha.grad.abs() > 0


# --- Gradients: autograd against finite differences, for every preset ------------------------

def presets_with_lambda():
    for name in ibnorm.presets():
        if name.startswith("ibnorm-") or name == "ln-tanh":
            for lam in (0, 0.5, 2):
                yield f"{name}:lambda={lam}"
        elif name == "groupnorm":
            yield "groupnorm:groups=2"
        else:
            yield name


@pytest.mark.parametrize("spec", list(presets_with_lambda()))
def test_gradcheck_every_preset(spec):
    # NormalNorm's exponent is estimated from the detached batch (autograd leaves out its
    # derivative on purpose; finite differences would not): on the batch area in eval mode it
    # comes from the running estimates, a constant.
    norm = ibnorm.Norm("normalnorm:area=batch", 4).double().eval() if spec == "normalnorm" else ibnorm.Norm(spec, 4).double()
    names = [name for name, _ in norm.named_parameters()]
    buffers = [buffer.clone() for _, buffer in norm.named_buffers()]
    generator = torch.Generator().manual_seed(5)
    params = [(p.detach() + 0.1 * torch.randn(p.shape, generator=generator, dtype=p.dtype)).requires_grad_(True)
              for p in norm.parameters()]
    x = sample(6, 4).requires_grad_(True)

    def forward(x, *params):
        state = list(params) + [b.clone() for b in buffers]
        return torch.ops.ibn.norm_forward(x, norm.spec, 4, state, norm.training)

    assert len(names) == len(params)
    assert torch.autograd.gradcheck(forward, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


# --- Contraction -----------------------------------------------------------------------------

def test_fp8_output_is_the_quantized_layernorm_with_its_gradient_passed_straight_through():
    """`fp8=e4m3:scaling=row` (issue 17): the output is LayerNorm's, stored in OCP E4M3 with a
    per-row amax scale and read back (the E4M3 grid built here from the spec's bit layout), and
    the gradient is LayerNorm's own."""
    grid = []
    for code in range(0x7F):  # 0x7F is NaN
        e, m = code >> 3, code & 7
        grid.append(m / 8 * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))
    grid = np.array(grid)
    torch.manual_seed(0)
    x = torch.randn(16, 24, dtype=torch.float32)
    plain, quantized = ibnorm.Norm("layernorm", 24), ibnorm.Norm("layernorm:fp8=e4m3:scaling=row", 24)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y, yq = plain(xa), quantized(xb)
    ynp = y.detach().numpy().astype(np.float32)
    scale = (np.abs(ynp).max(axis=1, keepdims=True) / np.float32(448)).astype(np.float32)
    v = np.abs((ynp / scale).astype(np.float32)).astype(np.float64)
    nearest = grid[np.abs(v[..., None] - grid).argmin(axis=-1)]  # no ties in random data
    expected = (np.sign(ynp) * nearest * scale).astype(np.float32)
    assert np.array_equal(yq.detach().numpy(), expected)
    upstream = torch.randn_like(y)
    y.backward(upstream)
    yq.backward(upstream)
    assert torch.equal(xa.grad, xb.grad)


def test_contraction_quadrature_and_measured():
    assert ibnorm.contraction("layernorm") == 1.0
    kappa = ibnorm.contraction("ibnorm-t:lambda=2")
    z = np.linspace(-12, 12, 400001)
    density = np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    u = np.tanh(2 * z) / 2
    step = z[1] - z[0]
    expected = (u * u * density).sum() * step - ((u * density).sum() * step) ** 2
    assert abs(kappa - expected) < 1e-9
    lam = ibnorm.lambda_for_contraction("ibnorm-s", 0.5)
    assert abs(ibnorm.contraction(f"ibnorm-s:lambda={lam}") - 0.5) < 1e-9
    x = torch.randn(20000, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # Groups of 8 standardized by their own statistics are not unit Gaussians: about 0.004 apart.
    assert abs(ibnorm.contraction("ibnorm-t:lambda=2", x) - kappa) < 0.01


# --- Mutual information ------------------------------------------------------------------------

def test_mi_equals_the_command_line_on_the_same_file(tmp_path):
    if not IBN:
        pytest.fail("IBN (the ibn binary) is not set; CTest sets it")
    rng = np.random.default_rng(4)
    a = rng.normal(size=(600, 2))
    labels = (a[:, 0] + 0.5 * rng.normal(size=600) > 0).astype(np.int64)
    with h5py.File(tmp_path / "pair.h5", "w") as f:
        f["a"], f["b"] = a, labels
    specs = ["ksg:k=3", "binning:bins=10", "kde:var=0.1"]
    cmd = [IBN, "mi", "--input", str(tmp_path / "pair.h5"), "--a", "/a", "--b", "/b", "--threads", "1",
           "--out", str(tmp_path / "mi.json")]
    for spec in specs:
        cmd += ["--estimator", spec]
    subprocess.run(cmd, check=True, capture_output=True)
    results = json.loads((tmp_path / "mi.json").read_text())["results"]
    for spec, row in zip(specs, results):
        ours = ibnorm.mi(a, labels, estimator=spec)
        assert ours.spec == row["estimator"]
        assert ours.nats == pytest.approx(row["estimate"], rel=1e-9, abs=1e-12)  # the CLI prints 10 digits
        for bound, key in ((ours.lower, "lower"), (ours.upper, "upper")):
            assert (bound is None) == (row[key] is None)
            if bound is not None:
                assert bound == pytest.approx(row[key], rel=1e-9, abs=1e-12)


def test_mi_takes_tensors_and_arrays_and_knows_a_closed_form():
    rho = 0.8
    cov = [[1, rho], [rho, 1]]
    xy = np.random.default_rng(0).multivariate_normal([0, 0], cov, size=4000)
    truth = -0.5 * math.log(1 - rho * rho)
    from_numpy = ibnorm.mi(xy[:, 0], xy[:, 1], estimator="ksg:k=3")
    from_torch = ibnorm.mi(torch.from_numpy(xy[:, :1]), torch.from_numpy(xy[:, 1:]), estimator="ksg:k=3")
    assert from_numpy.nats == from_torch.nats
    assert abs(from_numpy.nats - truth) < 0.05
    assert from_numpy.bits == pytest.approx(from_numpy.nats / math.log(2))
    kde = ibnorm.mi(xy[:, :1], xy[:, 1:], estimator="kde:var=0.1")
    assert kde.lower is not None and kde.upper is not None and kde.lower <= kde.upper


# --- Errors: Python exceptions, not crashes ----------------------------------------------------

def test_bad_input_raises_clear_python_errors():
    with pytest.raises(ValueError, match="ibnorm-q"):
        ibnorm.Norm("ibnorm-q", 8)
    with pytest.raises(ValueError, match="lambda"):
        ibnorm.Norm("ibnorm-t:lambda=-1", 8)
    norm = ibnorm.Norm("layernorm", 8)
    with pytest.raises(ValueError, match="7"):
        norm(torch.randn(4, 7))
    with pytest.raises(ValueError):
        ibnorm.Norm("groupnorm:groups=3", 8)
    bad = np.ones((10, 2))
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ibnorm.mi(bad, np.arange(10), estimator="ksg:k=3")
    with pytest.raises(ValueError, match="unknown"):
        ibnorm.mi(np.ones((10, 1)), np.arange(10), estimator="nonsense")
    with pytest.raises(ValueError, match="10 samples and B has 9"):
        ibnorm.mi(np.random.rand(10, 1), np.arange(9))


def test_a_mismatched_pytorch_is_refused_at_import(tmp_path):
    package = os.path.dirname(ibnorm.__file__)
    copy = tmp_path / "ibnorm"
    shutil.copytree(package, copy)
    build = (copy / "_build.py").read_text()
    (copy / "_build.py").write_text(build.replace(f'TORCH_VERSION = "', 'TORCH_VERSION = "0.1.0-was-'))
    result = subprocess.run([sys.executable, "-c", "import ibnorm"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "was built against LibTorch 0.1.0" in result.stderr, result.stderr


# --- Runs --------------------------------------------------------------------------------------

def test_load_run_reads_the_store_and_the_analysis(tmp_path):
    if not IBN:
        pytest.fail("IBN (the ibn binary) is not set; CTest sets it")
    run = tmp_path / "run"
    subprocess.run([IBN, "train", "--epochs", "3", "--dump-epochs", "all", "--threads", "1", "--progress", "quiet",
                    "--out", str(run)], check=True, capture_output=True)
    subprocess.run([IBN, "analyze", str(run), "--quiet", "--estimator", "binning:bins=10", "--threads", "1"],
                   check=True, capture_output=True)
    loaded = ibnorm.load_run(str(run))
    assert loaded.dumped_epochs == [0, 1, 2, 3]
    assert loaded.config["epochs"] == "3"
    assert loaded.attributes["seed"] == 0
    assert list(loaded.metrics["epoch"]) == [0, 1, 2, 3]
    first = loaded.layers[0]
    with h5py.File(run / "activations.h5", "r") as f:
        np.testing.assert_array_equal(loaded.activations(2, first), f[f"/epochs/2/{first}"][...])
        np.testing.assert_array_equal(loaded.data["labels"], f["/data/labels"][...])
    assert set(loaded.epoch(3)) == set(loaded.layers)
    rows = loaded.analysis.rows
    assert set(rows["layer"]) <= set(loaded.layers) and set(rows["estimator"]) == {"binning:bins=10"}
    assert len(rows["I_XT"]) == len(rows["epoch"]) > 0
    with pytest.raises(KeyError, match="not dumped"):
        loaded.activations(9, first)
    with pytest.raises(FileNotFoundError, match="activations.h5"):
        ibnorm.load_run(str(tmp_path))
