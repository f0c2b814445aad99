"""The ResNet-style CNN of ``cnn_torch.py`` in flax.linen, NHWC inputs (B, 8, 8, 3).

Names mirror torch's: ``conv1``, ``bn1``, ``layer1``/``layer2`` (``conv1``, ``bn1``, ``conv2``,
``bn2``; layer2 also ``downsample_conv``, ``downsample_bn``), ``fc``. Conv kernels are HWIO
(torch's OIHW transposed (2, 3, 1, 0)). Padding is explicit ((1, 1), (1, 1)) for every 3x3 conv,
as torch's padding=1: Flax's "SAME" at stride 2 on an even input pads (0, 1) and would shift the
sampling grid. BatchNorm uses torch's defaults (eps 1e-5, momentum 0.1 == Flax momentum 0.9);
``train=False`` normalises with the running statistics (``batch_stats``).
"""
import flax.linen as nn
import jax.numpy as jnp

PAD1 = ((1, 1), (1, 1))


def _bn(train, name):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class BasicBlock(nn.Module):
    planes: int
    stride: int = 1
    downsample: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        identity = x
        s = (self.stride, self.stride)
        out = nn.Conv(self.planes, (3, 3), strides=s, padding=PAD1, use_bias=False, name="conv1")(x)
        out = _bn(train, "bn1")(out)
        out = nn.relu(out)
        out = nn.Conv(self.planes, (3, 3), strides=(1, 1), padding=PAD1, use_bias=False, name="conv2")(out)
        out = _bn(train, "bn2")(out)
        if self.downsample:
            identity = nn.Conv(self.planes, (1, 1), strides=s, padding="VALID", use_bias=False,
                               name="downsample_conv")(x)
            identity = _bn(train, "downsample_bn")(identity)
        return nn.relu(out + identity)


class SmallResNet(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(8, (3, 3), padding=PAD1, use_bias=False, name="conv1")(x)
        x = _bn(train, "bn1")(x)
        x = nn.relu(x)
        x = BasicBlock(8, name="layer1")(x, train)
        x = BasicBlock(16, stride=2, downsample=True, name="layer2")(x, train)
        x = jnp.mean(x, axis=(1, 2))  # global average pool
        return nn.Dense(self.num_classes, name="fc")(x)
