"""BN folding of whole models and the statistics recorded in training, against hand
calculations."""

import keras
import numpy as np
import pytest

from quantinit.analysis import (
    FoldingError,
    LayerDynamics,
    check_folding,
    fold_model,
    fold_weights,
    folded_model,
    kernel_layers,
    kernel_layers_of,
    layer_specs,
    layer_weights,
    quantized_tensors,
    quantized_tensors_of,
)
from quantinit.layerfiles import (
    load_folded,
    load_layers,
    load_tensor_kinds,
    save_layers,
    save_weights,
)
from quantinit.models import build_model, layer_plan, weighted_layers
from quantinit.registry import ARCHITECTURES
from quantinit.stats import average_channel_precision, percentile_range

from keras_models import keras_capture

SMALL = dict(width_multiplier=0.25, dense=(32, 16))


def images(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 32, 32, 3)).astype("float32")


def randomize_batchnorm(model, seed=0):
    """Non-trivial BN parameters and moving statistics, as after training."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(-2, 2, n),  # gamma, both signs
                    rng.normal(0, 0.5, n),  # beta
                    rng.normal(0, 0.3, n),  # moving mean
                    rng.uniform(0.05, 3, n),  # moving variance
                ]
            )


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_kernel_layers_match_the_architecture_plan(arch):
    model = build_model(arch, "HeUni", 0, **SMALL)
    found = kernel_layers(model)
    planned = weighted_layers(arch, width_multiplier=0.25, dense=(32, 16))
    assert [(k.order, k.name, k.kind, k.batchnorm, k.output) for k in found] == [
        (p.order, p.name, p.kind, p.batchnorm, p.activation) for p in planned
    ]
    # the input, every kernel layer's output and every Add's, in the plan's order, as the
    # folded model names them (a BN without ReLU after it is folded away)
    plan = layer_plan(arch, width_multiplier=0.25, dense=(32, 16))
    outputs = [
        spec["relu"] or spec["name"] for spec in plan if spec["kind"] not in ("pool", "flatten")
    ]
    assert quantized_tensors(model) == ["rescale", *outputs]


@pytest.mark.parametrize(
    "arch", ["Regular_Conv_With_BN", "DWS_Conv_With_BN", "Residual_With_BN", "InvResidual_With_BN"]
)
def test_folded_model_gives_the_same_logits(arch):
    model = build_model(arch, "GlorotUni", 0, **SMALL)
    randomize_batchnorm(model)
    folded, weights = fold_model(model)
    assert not any(isinstance(la, keras.layers.BatchNormalization) for la in folded.layers)
    assert [k.name for k in kernel_layers(folded)] == [k.name for k in kernel_layers(model)]
    x = images(32)
    original = keras_capture(model, x, ["logits"])["logits"]
    refolded = keras_capture(folded, x, ["logits"])["logits"]
    # float32 round-off: relative to the logits' scale
    np.testing.assert_allclose(refolded, original, rtol=0, atol=1e-4 * np.abs(original).max())
    second = kernel_layers(model)[1].name  # block1_dw or block1_conv
    np.testing.assert_array_equal(
        folded.get_layer(second).get_weights()[0], weights[second]["kernel"]
    )


@pytest.mark.parametrize(
    "arch",
    ["Regular_Conv_With_BN", "DWS_Conv_With_BN", "DWS_Conv_No_BN", "Residual_With_BN",
     "InvResidual_With_BN"],
)  # fmt: skip
def test_folding_from_the_layers_file_is_the_keras_fold(arch, tmp_path):
    """What rule fold_bn does without Keras (layers.npz -> weights.npz) and what the stages
    that run the network rebuild from it equal folding the Keras model in memory."""
    model = build_model(arch, "GlorotUni", 0, **SMALL)
    randomize_batchnorm(model)
    save_layers(tmp_path / "layers.npz", layer_specs(model), layer_weights(model))
    specs, weights = load_layers(tmp_path / "layers.npz")
    assert specs == layer_specs(model)
    for layer in model.layers:
        for stored, kept in zip(weights.get(layer.name, []), layer.get_weights(), strict=True):
            np.testing.assert_array_equal(stored, kept)
    layers = kernel_layers_of(specs)
    assert layers == kernel_layers(model)
    folded = fold_weights(specs, weights, layers)
    trained = {k.name: weights[k.name][0] for k in layers}
    tensors = quantized_tensors_of(specs)
    save_weights(tmp_path / "weights.npz", layers, trained, folded, tensors)
    assert load_tensor_kinds(tmp_path / "weights.npz") == tensors
    assert list(tensors) == quantized_tensors(model)
    in_memory, expected = fold_model(model)
    rebuilt = folded_model(model, load_folded(tmp_path / "weights.npz"))
    for k in layers:  # bit-identical, biases included
        for got, want in zip(
            rebuilt.get_layer(k.name).get_weights(), in_memory.get_layer(k.name).get_weights(),
            strict=True,
        ):  # fmt: skip
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(folded[k.name]["bias"], expected[k.name]["bias"])
    x = images(8)
    np.testing.assert_array_equal(rebuilt.predict(x, verbose=0), in_memory.predict(x, verbose=0))


def logits_of(*models, n=16):
    return [keras_capture(m, images(n), ["logits"])["logits"] for m in models]


def test_folding_check_passes_a_fold_and_fails_a_wrong_one():
    model = build_model("Regular_Conv_With_BN", "HeUni", 0, **SMALL)
    randomize_batchnorm(model)
    folded, _ = fold_model(model)
    assert check_folding(*logits_of(model, folded)) < 1e-4
    layer = kernel_layers(model)[3].name  # a BN-folded conv in the middle of the network
    kernel, bias = folded.get_layer(layer).get_weights()
    folded.get_layer(layer).set_weights([kernel, bias + 0.5])  # a misplaced BN shift
    with pytest.raises(FoldingError, match="folding is wrong for this model"):
        check_folding(*logits_of(model, folded))


def test_folding_check_accepts_an_exploded_network_that_folds_to_itself():
    """Finite weights, infinite logits (seen: Regular_Conv_No_BN with 1e17 ranges)."""
    model = build_model("Regular_Conv_No_BN", "RandNorm_Large", 0, **SMALL)
    for name in ("fc1", "logits"):
        layer = model.get_layer(name)
        layer.set_weights([w * 1e30 for w in layer.get_weights()])
    folded, _ = fold_model(model)
    logits, folded_logits = logits_of(model, folded, n=4)
    assert not np.isfinite(logits).all()
    assert check_folding(logits, folded_logits) == 0


def test_model_without_batchnorm_folds_to_itself():
    model = build_model("DWS_Conv_No_BN", "HeUni", 0, **SMALL)
    folded, _ = fold_model(model)
    for a, b in zip(model.get_weights(), folded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("arch", ["Regular_Conv_With_BN", "DWS_Conv_No_BN"])
def test_layer_dynamics_equal_statistics_computed_by_hand(arch):
    model = build_model(arch, "HeUni", 0, bn_momentum=0.9, **SMALL)
    randomize_batchnorm(model)
    probe = images(24)
    rows = LayerDynamics(model, probe, percentile=1.0)(3)
    layers = kernel_layers(model)
    outputs = keras_capture(model, probe, [layer.output for layer in layers])  # after the ReLU
    assert [row["layer"] for row in rows] == [layer.name for layer in layers]
    for row, layer in zip(rows, layers, strict=True):
        kernel = model.get_layer(layer.name).get_weights()[0]
        lo, hi = percentile_range(outputs[layer.output], 1.0)
        assert row["epoch"] == 3 and row["order"] == layer.order
        assert row["weight_range"] == pytest.approx(float(kernel.max() - kernel.min()))
        assert row["activation_range"] == pytest.approx(hi - lo, rel=1e-5)
        expected = average_channel_precision(np.clip(outputs[layer.output], lo, hi), -1)
        assert row["activation_precision"] == pytest.approx(expected, rel=1e-5, nan_ok=True)
