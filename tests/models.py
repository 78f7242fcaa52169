"""Small torch right-hand sides shared by the tests."""
import torch


class CubicMLP(torch.nn.Module):
    """f(t, y) = MLP(y**3) * (1 + 0.3 sin t): the spiral model, made time dependent."""

    def __init__(self, n: int = 2, hidden: int = 50):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(n, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, n)).double()

    def forward(self, t, y):
        return self.net(y ** 3) * (1 + 0.3 * torch.sin(t))


class ConvField(torch.nn.Module):
    """A convolutional right-hand side on (batch, c, h, w) states."""

    def __init__(self, c: int = 2):
        super().__init__()
        self.conv = torch.nn.Conv2d(c, c, 3, padding=1).double()

    def forward(self, t, y):
        return torch.tanh(self.conv(y)) - 0.1 * y
