"""convert and the integrations on Darts' and NeuralForecast's TCNs (the real libraries, installed
from the package registry): the fused modules are the ones that run (Darts' forward loops over its
plain `res_blocks_list`, which holds the same objects), outputs and every gradient equal the
library's own, Parameters and state_dict keys are the library's, and checkpoints load strictly."""
import copy

import numpy as np
import pytest
import torch
from darts.models.forecasting import tcn_model
from darts.models.forecasting.pl_forecasting_module import ModuleStage
from darts.utils.data.torch_datasets.utils import PLModuleInput
from neuralforecast.common import _modules as nf_modules

import tcnkernels
from helpers import LaunchRecorder, assert_same_as_library
from tcnkernels import integrations


def _darts(weight_norm, input_size, target_size, kernel_size=3, dropout=0.0, legacy_norm=False):
    torch.manual_seed(kernel_size + input_size)
    module = tcn_model._TCNModule(input_size=input_size, kernel_size=kernel_size, num_filters=4, num_layers=3,
                                  dilation_base=2, weight_norm=weight_norm, target_size=target_size, nr_params=1,
                                  target_length=4, dropout=dropout, input_chunk_length=16, output_chunk_length=4)
    if legacy_norm:  # the weight-norm API older Darts versions used
        for block in module.res_blocks:
            block.conv1 = torch.nn.utils.weight_norm(block.conv1)
            block.conv2 = torch.nn.utils.weight_norm(block.conv2)
    return module


def _compare(build, run, launches):
    ours, theirs = build(), build()
    params, keys = list(ours.parameters()), list(ours.state_dict())
    tcnkernels.convert(ours, strict=True)
    assert all(a is b for a, b in zip(ours.parameters(), params)) and list(ours.state_dict()) == keys
    with LaunchRecorder() as rec:
        got = run(ours)
    assert rec.launches.count("causal_conv1d_kernel") == launches, rec.launches
    want = run(theirs)
    assert_same_as_library(ours, theirs, got, want, build)
    return ours


@pytest.mark.parametrize("weight_norm, legacy, input_size, target_size",
                         [(False, False, 2, 1), (True, False, 4, 4), (False, True, 1, 2)])
def test_convert_fuses_darts_blocks(weight_norm, legacy, input_size, target_size):
    def build():
        return _darts(weight_norm, input_size, target_size, legacy_norm=legacy)

    x = PLModuleInput(past_target=torch.randn(3, 16, input_size), stage=ModuleStage.TRAIN)
    downsamples = (input_size != 4) + (target_size != 4)
    ours = _compare(build, lambda m: m(x).prediction, 6 + downsamples)
    assert all(a is b for a, b in zip(ours.res_blocks_list, ours.res_blocks))
    assert type(ours.res_blocks[0]) is tcn_model._ResidualBlock


def test_darts_monte_carlo_dropout_stays_active_at_predict_time():
    """MonteCarloDropout stays a child module that Darts switches: active at predict time when Darts
    asks (the masks are drawn in the fused convs' channel-last output order, so they are other
    draws than Darts' own), off otherwise."""
    ours = _darts(False, 2, 1, dropout=0.5).eval()
    theirs = copy.deepcopy(ours)
    tcnkernels.convert(ours)
    x = PLModuleInput(past_target=torch.randn(2, 16, 2), stage=ModuleStage.PREDICT)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).prediction, theirs(x).prediction, rtol=1e-5, atol=1e-5)
        ours.set_mc_dropout(active=True)
        assert not torch.allclose(ours(x).prediction, ours(x).prediction), "dropout is active"
        ours.set_mc_dropout(active=False)
        torch.testing.assert_close(ours(x).prediction, theirs(x).prediction, rtol=1e-5, atol=1e-5)


def _fit_and_predict(epochs=2):
    from darts import TimeSeries
    from darts.models import TCNModel
    series = TimeSeries.from_values(np.sin(np.arange(80) / 4).astype(np.float32))
    model = TCNModel(input_chunk_length=12, output_chunk_length=3, kernel_size=3, num_filters=3, n_epochs=epochs,
                     dropout=0.0, random_state=0, batch_size=32,
                     pl_trainer_kwargs=dict(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                                            logger=False, enable_checkpointing=False))
    model.fit(series, verbose=False)
    return model, model.predict(3, series=series, verbose=False).values()


def _nf_fit_and_predict(steps=4):
    import pandas as pd
    from neuralforecast import NeuralForecast
    from neuralforecast.models import TCN
    frame = pd.DataFrame({"unique_id": "s", "ds": pd.date_range("2020-01-01", periods=80, freq="D"),
                          "y": np.sin(np.arange(80) / 4).astype(np.float32)})
    model = TCN(h=3, input_size=12, max_steps=steps, random_seed=0, batch_size=8, encoder_hidden_size=8,
                context_size=4, decoder_hidden_size=8, enable_progress_bar=False, logger=False,
                enable_model_summary=False, accelerator="cpu", enable_checkpointing=False)
    forecaster = NeuralForecast(models=[model], freq="D")
    forecaster.fit(frame)
    return forecaster, forecaster.predict()["TCN"].to_numpy()


# Loads the checkpoints in a fresh interpreter where `import tcnkernels` fails, and prints the predictions.
_LOAD_WITHOUT_TCNKERNELS = """
import sys
sys.modules["tcnkernels"] = None  # any unpickled reference to tcnkernels would raise here
import numpy as np
from darts.models import TCNModel
from neuralforecast import NeuralForecast
darts_model = TCNModel.load(sys.argv[1] + "/darts.pt")
print(darts_model.predict(3, verbose=False).values().ravel().tolist())
print(NeuralForecast.load(sys.argv[1] + "/nf").predict()["TCN"].to_numpy().tolist())
"""


@pytest.mark.slow
def test_integrations_train_fused_and_checkpoints_stay_the_libraries(tmp_path):
    """A short Darts TCNModel fit and a NeuralForecast TCN fit through the integrations run the fused
    kernels, learn what the unpatched libraries learn with the same seed, and save checkpoints that
    load as the libraries' own, in a process where tcnkernels cannot even be imported."""
    import subprocess
    import sys
    integrations.apply_to_darts()
    integrations.apply_to_neuralforecast()
    try:
        with LaunchRecorder() as rec:
            model, got = _fit_and_predict()
        assert rec.launches.count("causal_conv1d_kernel") > 0
        module = model.model.eval()  # the trained TCNModel streams as it is (its .model)
        x = torch.randn(2, 12, 1)
        with torch.no_grad():
            whole = module(PLModuleInput(past_target=x, stage=ModuleStage.TRAIN)).prediction
            torch.testing.assert_close(_chunks(tcnkernels.Streamer(model, batch_size=2), x), whole, rtol=1e-5,
                                       atol=1e-5)
        with LaunchRecorder() as rec:
            forecaster, nf_got = _nf_fit_and_predict()
        assert rec.launches.count("causal_conv1d_kernel") > 0
        model.save(str(tmp_path / "darts.pt"))
        forecaster.save(str(tmp_path / "nf"), save_dataset=True, overwrite=True)
    finally:
        integrations.restore_darts()
        integrations.restore_neuralforecast()
    _, want = _fit_and_predict()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    _, nf_want = _nf_fit_and_predict()
    np.testing.assert_allclose(nf_got, nf_want, rtol=1e-4, atol=1e-4)
    proc = subprocess.run([sys.executable, "-c", _LOAD_WITHOUT_TCNKERNELS, str(tmp_path)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    darts_lines, nf_lines = proc.stdout.strip().splitlines()[-2:]
    np.testing.assert_allclose(eval(darts_lines), got.ravel(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(eval(nf_lines), nf_got, rtol=1e-5, atol=1e-6)


def test_integrations_refuse_a_structure_they_do_not_know(monkeypatch):
    class Changed(tcn_model._ResidualBlock):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.conv1.padding = (1,)

    monkeypatch.setattr(tcn_model, "_ResidualBlock", Changed)
    with pytest.raises(RuntimeError, match="tested with \\(0.48.1\\)"):
        integrations.apply_to_darts()


@pytest.mark.parametrize("activation, fused", [("ReLU", True), ("PReLU", True), ("Softsign", False)])
def test_convert_fuses_neuralforecast_encoder(activation, fused):
    def build():
        torch.manual_seed(0)
        return nf_modules.TemporalConvolutionEncoder(3, 5, 2, [1, 2, 4], activation=activation)

    x = torch.randn(2, 17, 3)  # [N, T, C]
    ours = _compare(build, lambda m: m(x), 3)
    assert "tcn.0.conv.weight" in ours.state_dict() and "tcn.0.causalconv.0.weight" in ours.state_dict()


def test_apply_to_neuralforecast_runs_its_encoder_fused():
    torch.manual_seed(0)
    theirs = nf_modules.TemporalConvolutionEncoder(2, 4, 3, [1, 2], activation="Tanh")
    integrations.apply_to_neuralforecast()
    integrations.apply_to_neuralforecast()  # idempotent
    try:
        x = torch.randn(2, 9, 2)
        with LaunchRecorder() as rec, torch.no_grad():
            got = theirs(x)
        assert rec.launches.count("causal_conv1d_kernel") == 2
    finally:
        integrations.restore_neuralforecast()
    with LaunchRecorder() as rec, torch.no_grad():
        want = theirs(x)
    assert rec.launches == []
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _chunks(stream, x):
    """x [N, T, C] stepped through in chunks of 1, 6 and the rest, concatenated along time."""
    return torch.cat([stream.step(x[:, a:b]) for a, b in ((0, 1), (1, 7), (7, x.shape[1]))], 1)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("weight_norm, converted", [(False, False), (True, True), (True, False)])
def test_streamer_steps_a_darts_tcn_exactly(backend, weight_norm, converted):
    """Darts' _TCNModule (no ReLU after the residual, none after the last conv2, conv3 downsamples)
    stepped in its own layout: [N, n, C] chunks in, [N, n, target_size, nr_params] out, equal to its
    forward on the whole window, at any batch size, MonteCarloDropout in eval."""
    model = _darts(weight_norm, input_size=2, target_size=3, dropout=0.3).eval()
    if converted:
        tcnkernels.convert(model)
    x = torch.randn(3, 16, 2)
    with torch.no_grad():
        whole = model(PLModuleInput(past_target=x, stage=ModuleStage.TRAIN)).prediction
        stream = tcnkernels.Streamer(model, batch_size=3, backend=backend)
        steps = _chunks(stream, x)
    assert stream.backend == backend and stream.layout.channels_last
    torch.testing.assert_close(steps, whole, rtol=1e-5, atol=1e-5)
    model.set_mc_dropout(active=True)  # Darts' predict-time Monte Carlo dropout: random, not streamable
    with pytest.raises(ValueError, match="mc_dropout"):
        stream.step(x[:, :1])


def test_triton_step_refuses_darts_blocks_and_auto_picks_another():
    """The Triton step runs blocks with the ReLU after the residual only: asked for, it says so; auto
    on a CUDA device would fall back (here, on a CPU, auto picks the C++ step)."""
    model = _darts(False, input_size=2, target_size=3, dropout=0.0).eval()
    with pytest.raises(ValueError, match="Darts' blocks .* run on the C.. and PyTorch steps"):
        tcnkernels.Streamer(model, batch_size=2, backend="triton")
    assert tcnkernels.Streamer(model, batch_size=2).backend in ("cpp", "torch")


@pytest.mark.parametrize("activation, backend, runs", [("ReLU", "auto", "cpp"), ("ReLU", "triton", "triton"),
                                                       ("PReLU", "auto", "torch"), ("Softsign", "auto", "torch"),
                                                       ("Identity", "cpp", "cpp")])
@pytest.mark.parametrize("converted", [False, True], ids=["as-built", "converted"])
def test_streamer_steps_a_neuralforecast_encoder_exactly(activation, backend, runs, converted):
    """NeuralForecast's encoder stepped on [N, n, C] chunks: ReLU fused into the C++ and Triton
    steps' convs, any other pointwise activation a stage of the PyTorch step."""
    torch.manual_seed(0)
    encoder = nf_modules.TemporalConvolutionEncoder(3, 5, 2, [1, 2, 4], activation=activation).eval()
    if converted:
        tcnkernels.convert(encoder)
    x = torch.randn(4, 19, 3)  # [N, T, C]
    with torch.no_grad():
        whole = encoder(x)
        stream = tcnkernels.Streamer(encoder, batch_size=4, backend=backend)
        steps = _chunks(stream, x)
    assert stream.backend == runs
    torch.testing.assert_close(steps, whole, rtol=1e-5, atol=1e-5)


def test_streamer_says_what_of_darts_and_neuralforecast_it_cannot_step():
    from darts.models import TCNModel
    from neuralforecast.models import TCN
    with pytest.raises(ValueError, match="fit or load it first"):
        tcnkernels.Streamer(TCNModel(input_chunk_length=12, output_chunk_length=3), batch_size=1)
    with pytest.raises(ValueError, match="stream its hist_encoder"):
        tcnkernels.Streamer(TCN(h=4, input_size=8, max_steps=1), batch_size=1)
    with pytest.raises(ValueError, match="GLU halves an axis"):
        tcnkernels.Streamer(nf_modules.TemporalConvolutionEncoder(2, 4, 2, [1], activation="GLU"), batch_size=1)
    model = _darts(False, 2, 1, dropout=0.2)  # training mode
    stream = tcnkernels.Streamer(model.eval(), batch_size=1)
    with pytest.raises(ValueError, match=r"must be \(batch_size=1, n >= 1, C_in=2\), got shape \(1, 2, 5\)"):
        stream.step(torch.randn(1, 2, 5))  # channel-first, where Darts' layout is [N, T, C]
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        stream.step(torch.randn(1, 5, 2))
