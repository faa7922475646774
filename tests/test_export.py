"""dpd export and the torch-free runtime: the exported graph gives the torch policy's actions for
the same observations and noise (low-dim and image policies, every exportable sampler, batch 1
and a dynamic batch, with and without a committed prefix); bad files and samplers are refused
with the reason."""

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from diffusion_policy_dist.export import ExportError, export_onnx
from diffusion_policy_dist.policy import DiffusionPolicy, Window
from diffusion_policy_dist.runtime import ExportFileError, OnnxPolicy

pytest.importorskip("onnxruntime")

TINY = {"down_dims": [16, 32], "kernel_size": 3, "n_groups": 8, "time_embed_dim": 16}
LOWDIM = {"obs": {"state": {"shape": [3], "type": "low_dim"}}, "action": {"shape": [2]}}
IMAGE = {
    "obs": {
        "cam": {"shape": [3, 32, 32], "type": "rgb"},
        "state": {"shape": [3], "type": "low_dim"},
    },
    "action": {"shape": [2]},
}
SAMPLERS = {
    "distributional-1": {"kind": "distributional", "steps": 1},
    "distributional-2 churn 1": {"kind": "distributional", "steps": 2, "churn": 1.0},
    "ddim-4": {"kind": "ddim", "steps": 4},
}
TOL = 1e-4  # normalized action units (measured: <= 2.2e-6 for the distributional samplers)
# DDIM's first step divides the eps error by alpha(1) ~ 0.0016: float32 rounding differences
# between the two runtimes grow to 3.4e-4 over 300 random pairs (an untrained tiny model)
DDIM_TOL = 1e-3


def policy(kind="distributional", shape_meta=LOWDIM, **cfg):
    torch.manual_seed(0)
    base = {"kind": kind, "network": TINY,
            "obs_encoder": {"num_keypoints": 4, "image_feature_dim": 8}, **cfg}  # fmt: skip
    if kind == "mean":
        base["loss"] = {"kind": "mse"}
    pol = DiffusionPolicy(base, shape_meta, Window(8, 2, 4))
    rng = np.random.default_rng(0)
    pol.normalizer.fit({"state": rng.normal(size=(50, 3)), "action": rng.uniform(-2, 3, (50, 2))})
    return pol.eval()


def observations(shape_meta, B):
    g = torch.Generator().manual_seed(B)
    out = {}
    for key, m in shape_meta["obs"].items():
        if m["type"] == "rgb":
            out[key] = torch.randint(0, 256, (B, 2, *m["shape"]), generator=g, dtype=torch.uint8)
        else:
            out[key] = torch.randn(B, 2, *m["shape"], generator=g)
    return out


def normalized_gap(pol, torch_pred, onnx_pred) -> float:
    a = pol.normalizer.normalize("action", torch_pred)
    b = pol.normalizer.normalize("action", torch.as_tensor(onnx_pred))
    return float((a - b).abs().max())


def check_parity(pol, path, sampler, shape_meta, batches=(1, 3), prefix=False, tol=TOL):
    runtime = OnnxPolicy(path)
    for B in batches:
        obs = observations(shape_meta, B)
        kw = {}
        if prefix:
            kw = {"prefix": torch.randn(B, 3, 2), "prefix_lengths": torch.tensor([3, 1, 0][:B])}
        want = pol.predict_action(obs, sampler=sampler,
                                  generator=torch.Generator().manual_seed(7), **kw)  # fmt: skip
        got = runtime.predict_action(obs, generator=torch.Generator().manual_seed(7), **kw)
        gap = normalized_gap(pol, want["action_pred"], got["action_pred"])
        assert gap <= tol, (B, gap)
        assert np.array_equal(got["action"], got["action_pred"][:, 1:5])


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_low_dim_policy_parity_for_each_sampler(tmp_path, name):
    sampler = SAMPLERS[name]
    pol = policy("mean" if sampler["kind"] == "ddim" else "distributional")
    meta = export_onnx(pol, tmp_path / "p.onnx", sampler)
    assert meta["batch"] == "dynamic" and meta["sampler"]["kind"] == sampler["kind"]
    tol = DDIM_TOL if sampler["kind"] == "ddim" else TOL
    check_parity(pol, tmp_path / "p.onnx", sampler, LOWDIM, batches=(1, 100), tol=tol)


def test_input_noise_prefix_and_fixed_batch(tmp_path):
    pol = policy(noise_injection="concat", prefix_steps=2)
    export_onnx(pol, tmp_path / "concat.onnx", SAMPLERS["distributional-2 churn 1"])
    check_parity(pol, tmp_path / "concat.onnx", SAMPLERS["distributional-2 churn 1"], LOWDIM,
                 prefix=True)  # fmt: skip
    export_onnx(pol, tmp_path / "b2.onnx", None, batch=2)
    fixed = OnnxPolicy(tmp_path / "b2.onnx")
    assert fixed.meta["batch"] == 2 and fixed.meta["noise"][0]["shape"][0] == 2
    with pytest.raises(ValueError, match=r"has shape \(3, 2, 3\); the exported policy takes \[2"):
        fixed.predict_action(observations(LOWDIM, 3))


def test_image_policy_parity(tmp_path):
    pol = policy(shape_meta=IMAGE)
    export_onnx(pol, tmp_path / "img.onnx")
    runtime = OnnxPolicy(tmp_path / "img.onnx")
    assert [i["dtype"] for i in runtime.meta["inputs"][:2]] == ["uint8", "float32"]
    check_parity(pol, tmp_path / "img.onnx", None, IMAGE, batches=(1, 2))


def test_refusals_name_the_reason(tmp_path):
    with pytest.raises(ExportError, match="makes 100 network calls per chunk"):
        export_onnx(policy("mean"), tmp_path / "x.onnx", {"kind": "ddpm", "steps": 100})
    prior = policy(prior={"alpha": 0.5, "components": 2})
    with pytest.raises(ExportError, match="use_prior=false"):
        export_onnx(prior, tmp_path / "x.onnx")
    export_onnx(prior, tmp_path / "x.onnx", {"kind": "distributional", "use_prior": False})
    assert not (tmp_path / "x.onnx.tmp").exists()


def test_bad_files_are_refused_clearly(tmp_path, capsys):
    from diffusion_policy_dist.cli.main import main

    pol = policy()
    export_onnx(pol, tmp_path / "p.onnx")
    assert main(["info", f"path={tmp_path / 'p.onnx'}"]) == 0
    assert '"format": "diffusion_policy_dist.onnx/1"' in capsys.readouterr().out
    data = (tmp_path / "p.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportFileError, match=r"cut.onnx is not a readable ONNX model"):
        OnnxPolicy(tmp_path / "cut.onnx")
    with pytest.raises(FileNotFoundError, match="no such exported policy"):
        OnnxPolicy(tmp_path / "missing.onnx")
    import onnx

    model = onnx.load(str(tmp_path / "p.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(ExportFileError, match="has no 'dpd' metadata"):
        OnnxPolicy(tmp_path / "bare.onnx")


def test_the_runtime_needs_no_torch(tmp_path):
    export_onnx(policy(), tmp_path / "p.onnx")
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from diffusion_policy_dist.runtime import OnnxPolicy\n"
        f"p = OnnxPolicy({str(tmp_path / 'p.onnx')!r})\n"
        "p.reset(); acts = [p.select_action({'state': np.zeros(3)}) for _ in range(9)]\n"
        "assert all(a.shape == (2,) for a in acts) and p.queued == 3\n"
        "assert 'torch' not in {m.split('.')[0] for m in sys.modules if sys.modules[m]}\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_an_exported_policy_runs_in_the_controller(tmp_path):
    from diffusion_policy_dist.control import Controller

    pol = policy()
    export_onnx(pol, tmp_path / "p.onnx")
    firsts = []
    for p in (pol, OnnxPolicy(tmp_path / "p.onnx")):
        with Controller(p, control_hz=50, transition="prefix", seed=3, warmup=1) as ctrl:
            acts = []
            for i in range(12):  # at 50 Hz
                acts.append(ctrl.step({"state": np.full(3, 0.1 * i)}))
                time.sleep(0.02)
        firsts.append(acts[0])
        assert ctrl.stats()["chunks"] >= 2
    np.testing.assert_allclose(firsts[0], firsts[1], atol=1e-4)  # the first chunk: same noise
