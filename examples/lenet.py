"""LeNet-300-100 and LeNet-5 exactly as used in Deep Compression.

The architectures follow the Caffe definitions the paper compressed, so parameter counts (266,610 and
431,080) and per-layer shapes line up with its tables; that lets sqc report compression ratios that
can be checked against published figures. Layers carrying weights are the only submodules, and they
keep the paper's names (``fc1``..., ``conv1``...), because passes and recipes address layers by name.
Activations and pooling are written functionally so that ``torch.fx.symbolic_trace`` and
``torch.export.export`` see a plain, straight-line graph with no data-dependent control flow.

Inputs are float images scaled to [0, 1] (``x / 255``) with no mean/std normalisation, matching the
demo data in ``mnist_test_1k.npz``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LeNet5", "LeNet300"]


class LeNet300(nn.Module):
    """LeNet-300-100: a 784-300-100-10 multilayer perceptron with ReLU (266,610 parameters).

    ``forward`` accepts either ``(N, 1, 28, 28)`` images or already-flat ``(N, 784)`` rows, so the same
    checkpoint serves both image-shaped demo data and flat benchmark inputs.
    """

    example_input_shape = (1, 1, 28, 28)  # read by sqc when no --input-shape is given

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)

    def forward(self, x: Tensor) -> Tensor:
        # flatten(x, 1) is a no-op on (N, 784) and traces to a single node for both input shapes.
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet-5 in its Caffe form (431,080 parameters).

    conv1 (1->20, 5x5) -> maxpool 2 -> conv2 (20->50, 5x5) -> maxpool 2 -> fc1 (800->500) -> ReLU ->
    fc2 (500->10). As in Caffe's ``lenet_train_test.prototxt`` there is no non-linearity after the
    convolutions; adding one would change the model the paper's numbers refer to.
    """

    example_input_shape = (1, 1, 28, 28)  # read by sqc when no --input-shape is given

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(self.conv1(x), 2)  # (N, 20, 12, 12)
        x = F.max_pool2d(self.conv2(x), 2)  # (N, 50, 4, 4)
        x = torch.flatten(x, 1)  # (N, 800)
        x = F.relu(self.fc1(x))
        return self.fc2(x)
