"""The visualisation helpers shared by TensorBoard summaries and the inference tools."""

import numpy as np

from invariant_slots.lib import visualize


def test_attention_grid_layout():
  image = np.zeros((4, 6, 3), np.float32)
  attention = np.zeros((2, 3, 2, 3), np.float32)
  attention[1, 2, 1, 0] = 5.0  # Iteration 1, slot 2, cell (1, 0).
  grid = visualize.attention_grid(image, attention)
  assert grid.shape == (2 * 4, 4 * 6, 3)
  # The cell covers rows 2:4 and columns 0:2 of slot 2's tile, scaled to 1.
  tile = grid[4:8, 3 * 6:4 * 6, 0]
  np.testing.assert_array_equal(tile[2:4, 0:2], 1.0)
  assert tile.sum() == 4.0


def test_upsample_attention_equals_repeating_each_cell():
  attention = np.random.default_rng(0).uniform(size=(2, 3, 4, 5))
  expected = np.repeat(np.repeat(attention, 2, axis=2), 3, axis=3)
  expected /= expected.max(axis=(2, 3), keepdims=True)
  np.testing.assert_allclose(visualize.upsample_attention(attention, 8, 15), expected)


def test_montage_frame_strip_and_view_strip_place_images_side_by_side():
  images = np.random.default_rng(1).uniform(size=(2, 3, 4, 5, 3))
  strip = visualize.montage(images)
  assert strip.shape == (2, 4, 15, 3)
  np.testing.assert_array_equal(strip[:, :, 5:10], images[:, 1])
  np.testing.assert_array_equal(visualize.frame_strip(images), strip)
  frames = np.arange(20)[None, :, None, None, None] * np.ones((1, 20, 2, 2, 1))
  chosen = visualize.frame_strip(frames)[0, 0, ::2, 0]
  assert len(chosen) == visualize.MAX_SUMMARY_FRAMES and chosen[0] == 0 and chosen[-1] == 19
  rays = images.reshape(2, 3 * 4 * 5, 3)  # View-major rays of 3 views of 4 x 5 pixels.
  np.testing.assert_array_equal(visualize.view_strip(rays, 4, 5), strip)


def test_colours_are_distinct_and_background_is_black():
  colors = visualize.slot_colors(11)
  assert len({tuple(c) for c in colors.round(3)}) == 11
  ids = np.array([[0, 1], [2, 3]])
  rgb = visualize.id_colors(ids, 4)
  np.testing.assert_array_equal(rgb[0, 0], 0.0)
  np.testing.assert_allclose(rgb[1, 1], visualize.slot_colors(3)[2])


def test_overlays_blend_with_the_winning_slot_colour():
  image = np.full((2, 2, 3), 0.5, np.float32)
  hard = np.zeros((3, 2, 2))
  hard[1] = 1.0
  blended = visualize.segmentation_overlay(image, hard, opacity=0.5)
  np.testing.assert_allclose(blended, np.broadcast_to(0.25 + 0.5 * visualize.slot_colors(3)[1], (2, 2, 3)),
                             rtol=1e-6)
  soft = np.moveaxis(hard, 0, -1)
  np.testing.assert_allclose(visualize.mask_overlay(image, soft, opacity=0.5), blended, rtol=1e-6)
