"""Small Keras models the tests share."""

import keras
import numpy as np


def two_layer_model():
    """Rescaling, Dense(6) + ReLU, Dense(4), softmax on 32x32x3 images; seeded weights."""
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(6, name="fc1")(x)
    x = keras.layers.ReLU(name="fc1_relu")(x)
    x = keras.layers.Dense(4, name="logits")(x)
    outputs = keras.layers.Softmax(name="softmax")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    model.get_layer("fc1").set_weights([rng.normal(0, 0.05, (3072, 6)), rng.normal(0, 0.1, 6)])
    model.get_layer("logits").set_weights([rng.normal(0, 0.5, (6, 4)), rng.normal(0, 0.1, 4)])
    return model


def residual_model():
    """Rescaling, Dense(6) + ReLU, Dense(6) added to it, ReLU, Dense(4), softmax: the smallest
    residual block; seeded weights."""
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(6, name="fc1")(x)
    h = keras.layers.ReLU(name="fc1_relu")(x)
    body = keras.layers.Dense(6, name="fc2")(h)
    x = keras.layers.Add(name="add")([body, h])
    x = keras.layers.ReLU(name="add_relu")(x)
    x = keras.layers.Dense(4, name="logits")(x)
    outputs = keras.layers.Softmax(name="softmax")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(2)
    model.get_layer("fc1").set_weights([rng.normal(0, 0.05, (3072, 6)), rng.normal(0, 0.1, 6)])
    model.get_layer("fc2").set_weights([rng.normal(0, 0.5, (6, 6)), rng.normal(0, 0.1, 6)])
    model.get_layer("logits").set_weights([rng.normal(0, 0.5, (6, 4)), rng.normal(0, 0.1, 4)])
    return model


def keras_capture(model, images, names):
    """{layer: its output on `images`} of a Keras model, by Keras itself."""
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    outputs = probe.predict(images, verbose=0)
    return dict(zip(names, outputs if len(names) > 1 else [outputs], strict=True))


def engine_of(model, batch_size=32):
    """The engine of a BN-free Keras model, with the model's own weights set."""
    from quantinit.analysis import kernel_layers
    from quantinit.engine import Engine, build_engine, folded_weights

    engine = Engine(*build_engine(model), batch_size=batch_size)
    engine.set_weights(folded_weights(folded_of(model, kernel_layers(model))))
    return engine


def folded_of(model, layers):
    """{layer: {"kernel", "bias"}} of a BN-free Keras model's kernel layers."""
    return {k.name: dict(zip(("kernel", "bias"), model.get_layer(k.name).get_weights(),
                             strict=True)) for k in layers}  # fmt: skip


def quantized_network(model, bounds, scheme, batch_size=32):
    """engine.QuantizedNetwork of a BN-free Keras model with its own weights."""
    from quantinit.analysis import kernel_layers
    from quantinit.engine import QuantizedNetwork

    engine = engine_of(model, batch_size)
    return QuantizedNetwork(engine, folded_of(model, kernel_layers(model)), bounds, scheme)
