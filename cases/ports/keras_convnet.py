"""Keras 3 convnets, backend-agnostic (only ``import keras``: runs under the tensorflow, jax and
torch backends).

``build()``: ``keras.applications.MobileNet`` at its smallest useful size, random weights.
keras.applications refuses inputs under 32x32, so the default input is (32, 32, 3); alpha=0.125
gives about 61k parameters (58k trainable). ``dropout`` defaults to 0 here (MobileNet's own default
is 1e-3) so a training-mode forward is deterministic; the head ends in a softmax as in MobileNet.

``build_small()``: a hand-written functional model, Conv2D(8, 3, 'same') - BatchNormalization -
ReLU - Conv2D(8, 3, 'valid') - GlobalAveragePooling2D - Dense, layers named explicitly so the
weight paths do not depend on how many models the process built before.
"""
import keras


def build(input_shape=(32, 32, 3), classes=5, alpha=0.125, dropout=0.0, classifier_activation="softmax"):
    return keras.applications.MobileNet(input_shape=tuple(input_shape), alpha=alpha, depth_multiplier=1,
                                        dropout=dropout, include_top=True, weights=None, classes=classes,
                                        classifier_activation=classifier_activation)


def build_small(input_shape=(8, 8, 3), classes=5):
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Conv2D(8, 3, padding="valid", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(classes, name="fc")(x)
    return keras.Model(inputs, outputs, name="small_convnet")
