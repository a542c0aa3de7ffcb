"""Plain PyTorch object-discovery model, used only as a speed reference.

The same architecture as `configs/clevr.py` builds in invariant_slots
(Locatello et al. 2020, CLEVR object discovery): a 4 x (5x5, 64) CNN encoder
with a soft position embedding, LayerNorm and MLP; Slot Attention with shared
weights, a GRU and a residual MLP; a spatial-broadcast decoder from 8x8 with
5x5 transposed convolutions to RGB + alpha per slot; MSE loss. Needs the
optional `bench` extra (`pip install -e ".[bench]"`); nothing else in the
package imports torch.
"""

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def position_grid(height: int, width: int) -> torch.Tensor:
  """`[height, width, 4]` linear ramps to the four borders."""
  ys = torch.linspace(0.0, 1.0, height)
  xs = torch.linspace(0.0, 1.0, width)
  grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)
  return torch.cat([grid, 1.0 - grid], dim=-1)


class SoftPositionEmbed(nn.Module):
  """Adds a linear projection of the border ramps to `[batch, h, w, dim]`."""

  def __init__(self, dim: int, height: int, width: int):
    super().__init__()
    self.proj = nn.Linear(4, dim)
    self.register_buffer("grid", position_grid(height, width))

  def forward(self, features: torch.Tensor) -> torch.Tensor:
    return features + self.proj(self.grid)


class Encoder(nn.Module):
  """`[batch, 3, H, W]` -> `[batch, H * W, slot_size]`."""

  def __init__(self, resolution: int, width: int = 64, slot_size: int = 64):
    super().__init__()
    self.convs = nn.ModuleList(
        [nn.Conv2d(3 if i == 0 else width, width, 5, padding=2) for i in range(4)])
    self.position = SoftPositionEmbed(width, resolution, resolution)
    self.norm = nn.LayerNorm(width)
    self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, slot_size))

  def forward(self, image: torch.Tensor) -> torch.Tensor:
    x = image
    for conv in self.convs:
      x = F.relu(conv(x))
    x = self.position(x.permute(0, 2, 3, 1))
    return self.mlp(self.norm(x.flatten(1, 2)))


class SlotAttention(nn.Module):
  """Slot Attention with Gaussian initial slots: `[b, n, d]` -> `[b, k, d]`."""

  def __init__(self, num_slots: int, slot_size: int, num_iterations: int,
               mlp_size: int = 128, epsilon: float = 1e-8):
    super().__init__()
    self.num_slots = num_slots
    self.num_iterations = num_iterations
    self.epsilon = epsilon
    self.mu = nn.Parameter(torch.randn(1, 1, slot_size) * slot_size ** -0.5)
    self.log_sigma = nn.Parameter(torch.zeros(1, 1, slot_size))
    self.norm_inputs = nn.LayerNorm(slot_size)
    self.norm_slots = nn.LayerNorm(slot_size)
    self.norm_mlp = nn.LayerNorm(slot_size)
    self.q = nn.Linear(slot_size, slot_size, bias=False)
    self.k = nn.Linear(slot_size, slot_size, bias=False)
    self.v = nn.Linear(slot_size, slot_size, bias=False)
    self.gru = nn.GRUCell(slot_size, slot_size)
    self.mlp = nn.Sequential(nn.Linear(slot_size, mlp_size), nn.ReLU(),
                             nn.Linear(mlp_size, slot_size))

  def forward(self, inputs: torch.Tensor) -> torch.Tensor:
    batch, _, dim = inputs.shape
    noise = torch.randn(batch, self.num_slots, dim)
    slots = self.mu + self.log_sigma.exp() * noise
    inputs = self.norm_inputs(inputs)
    keys, values = self.k(inputs), self.v(inputs)
    for _ in range(self.num_iterations):
      previous = slots
      queries = self.q(self.norm_slots(slots)) * dim ** -0.5
      logits = torch.einsum("bkd,bnd->bkn", queries, keys)
      attention = logits.softmax(dim=1) + self.epsilon
      attention = attention / attention.sum(dim=-1, keepdim=True)
      updates = torch.einsum("bkn,bnd->bkd", attention, values)
      slots = self.gru(updates.reshape(-1, dim), previous.reshape(-1, dim)).reshape(batch, -1, dim)
      slots = slots + self.mlp(self.norm_mlp(slots))
    return slots


class Decoder(nn.Module):
  """Spatial broadcast: `[b, k, d]` -> reconstruction `[b, 3, H, W]`, masks."""

  def __init__(self, slot_size: int, features: Sequence[int], strides: Sequence[int],
               broadcast_size: int = 8):
    super().__init__()
    self.broadcast_size = broadcast_size
    self.position = SoftPositionEmbed(slot_size, broadcast_size, broadcast_size)
    layers = []
    channels = slot_size
    for width, stride in zip(features, strides):
      if stride > 1:
        layers.append(nn.ConvTranspose2d(channels, width, 5, stride=stride, padding=2,
                                         output_padding=stride - 1))
      else:
        layers.append(nn.Conv2d(channels, width, 5, padding=2))
      channels = width
    self.layers = nn.ModuleList(layers)
    self.output = nn.Conv2d(channels, 4, 3, padding=1)

  def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    batch, num_slots, dim = slots.shape
    size = self.broadcast_size
    x = slots.reshape(batch * num_slots, 1, 1, dim).expand(-1, size, size, -1)
    x = self.position(x).permute(0, 3, 1, 2)
    for layer in self.layers:
      x = F.relu(layer(x))
    x = self.output(x).reshape(batch, num_slots, 4, *x.shape[-2:])
    rgb, alpha = x[:, :, :3], x[:, :, 3:]
    masks = alpha.softmax(dim=1)
    return (masks * rgb).sum(dim=1), masks


class ObjectDiscovery(nn.Module):
  """Encoder, Slot Attention and decoder; `forward` returns the MSE loss."""

  def __init__(self, resolution: int = 128, num_slots: int = 7, num_iterations: int = 3,
               slot_size: int = 64):
    super().__init__()
    num_upsamplings = {128: 4, 64: 3, 32: 2}[resolution]
    self.encoder = Encoder(resolution, slot_size=slot_size)
    self.slot_attention = SlotAttention(num_slots, slot_size, num_iterations)
    self.decoder = Decoder(slot_size, [64] * (num_upsamplings + 1),
                           [2] * num_upsamplings + [1])

  def forward(self, image: torch.Tensor) -> torch.Tensor:
    reconstruction, _ = self.decoder(self.slot_attention(self.encoder(image)))
    return F.mse_loss(reconstruction, image)


def make_train_step(model: ObjectDiscovery, learning_rate: float = 4e-4, forward=None):
  """An Adam train step `step(image [b, 3, H, W]) -> loss`; `forward` (for
  example `torch.compile(model)`) computes the loss in place of `model`."""
  optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
  forward = model if forward is None else forward

  def step(image: torch.Tensor) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = forward(image)
    loss.backward()
    optimizer.step()
    return loss.detach().item()

  return step
