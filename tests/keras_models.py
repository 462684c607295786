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
