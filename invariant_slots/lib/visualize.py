"""Images of what the slots do, for TensorBoard and the inference tools.

Every function takes and returns float numpy arrays in [0, 1] (channels last).
"""

import colorsys

import numpy as np

# Frames drawn per video in the TensorBoard images.
MAX_SUMMARY_FRAMES = 8


def slot_colors(num_slots: int) -> np.ndarray:
  """`[num_slots, 3]` distinct colours (evenly spaced hues)."""
  return np.array([colorsys.hsv_to_rgb(k / num_slots, 0.9, 1.0) for k in range(num_slots)],
                  np.float32)


def id_colors(ids: np.ndarray, num_ids: int) -> np.ndarray:
  """Integer segment ids `[...]` -> RGB `[..., 3]`: id 0 (background) black, the others
  `slot_colors(num_ids - 1)`."""
  palette = np.concatenate([np.zeros((1, 3), np.float32), slot_colors(max(num_ids - 1, 1))])
  return palette[ids]


def montage(images: np.ndarray) -> np.ndarray:
  """`[batch, n, H, W, C]` -> `[batch, H, n * W, C]`: the n images side by side."""
  batch, n, height, width, channels = images.shape
  return images.transpose(0, 2, 1, 3, 4).reshape(batch, height, n * width, channels)


def frame_strip(frames: np.ndarray) -> np.ndarray:
  """`[batch, T, H, W, C]` -> `[batch, H, T' * W, C]`: up to `MAX_SUMMARY_FRAMES` evenly
  spaced frames side by side."""
  num_frames = frames.shape[1]
  chosen = np.linspace(0, num_frames - 1, min(num_frames, MAX_SUMMARY_FRAMES)).round()
  return montage(frames[:, chosen.astype(int)])


def view_strip(rays: np.ndarray, height: int, width: int) -> np.ndarray:
  """`[batch, views * H * W, C]` rays in view-major order -> `[batch, H, views * W, C]`."""
  batch, _, channels = rays.shape
  return montage(rays.reshape(batch, -1, height, width, channels))


def upsample_attention(attention: np.ndarray, height: int, width: int) -> np.ndarray:
  """`[..., h, w]` -> `[..., H, W]` (nearest), each map scaled to maximum 1."""
  h, w = attention.shape[-2:]
  rows, cols = np.arange(height) * h // height, np.arange(width) * w // width
  maps = attention[..., rows, :][..., cols]
  return maps / np.maximum(maps.max(axis=(-2, -1), keepdims=True), 1e-8)


def as_rgb(values: np.ndarray) -> np.ndarray:
  """`[batch, ..., C]`: 3 channels clipped to [0, 1]; 1 channel min-max scaled per
  example to grey."""
  if values.shape[-1] == 3:
    return np.clip(values, 0.0, 1.0)
  axes = tuple(range(1, values.ndim))
  low = values.min(axis=axes, keepdims=True)
  high = values.max(axis=axes, keepdims=True)
  return np.repeat((values - low) / np.maximum(high - low, 1e-8), 3, axis=-1)


def mask_overlay(image: np.ndarray, masks: np.ndarray, opacity: float = 0.6) -> np.ndarray:
  """`image [..., 3]` blended with the slot colours weighted by `masks [..., num_slots]`
  (soft masks that sum to 1 over the slots)."""
  colors = masks @ slot_colors(masks.shape[-1])
  return np.clip((1.0 - opacity) * image + opacity * colors, 0.0, 1.0)


def segmentation_overlay(image: np.ndarray, masks: np.ndarray, opacity: float = 0.5) -> np.ndarray:
  """`image [..., H, W, 3]` blended with the colour of each pixel's arg-max slot of
  `masks [..., num_slots, H, W]`."""
  colors = slot_colors(masks.shape[-3])[np.argmax(masks, axis=-3)]
  return (1.0 - opacity) * image + opacity * colors


def slot_images(masks: np.ndarray, slot_outputs: np.ndarray, reconstruction: np.ndarray,
                image: np.ndarray, attention: np.ndarray) -> dict[str, np.ndarray]:
  """Input, reconstruction, per-slot renders on white, masks and attention.

  Args:
    masks: `[n, num_slots, H, W, 1]`.
    slot_outputs: `[n, num_slots, H, W, 3]`.
    reconstruction: `[n, H, W, 3]`.
    image: `[n, H, W, 3]`.
    attention: `[n, num_slots, h, w]` on the feature grid.
  """
  height, width = masks.shape[2:4]
  attention = upsample_attention(attention, height, width)
  return {
      "input": image,
      "reconstruction": np.clip(reconstruction, 0.0, 1.0),
      "slots": np.clip(montage(masks * slot_outputs + (1.0 - masks)), 0.0, 1.0),
      "masks": montage(np.repeat(masks, 3, axis=-1)),
      "attention": montage(np.repeat(attention[..., None], 3, axis=-1)),
  }


def attention_grid(image: np.ndarray, attention: np.ndarray) -> np.ndarray:
  """`image [H, W, 3]`, `attention [T, K, h, w]` -> `[T * H, (K + 1) * W, 3]`.

  Row t shows the image, then each slot's attention at iteration t, upsampled
  (nearest) to the image size and scaled to maximum 1.
  """
  height, width = image.shape[:2]
  maps = np.repeat(upsample_attention(attention, height, width)[..., None], 3, axis=-1)
  images = np.broadcast_to(image, (maps.shape[0], 1, height, width, 3))
  rows = montage(np.concatenate([images, maps], axis=1))  # [T, H, (K + 1) * W, 3]
  return rows.reshape(-1, rows.shape[2], 3)
