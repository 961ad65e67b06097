"""Z-buffered triangle rasterizer and the control images, in pure JAX.

Contracts (other modules rely on them):

- Camera: OpenCV frame (x right, y down, z forward), full perspective, diagonal field of view in
  degrees, principal point at the image centre, pixel i's centre at i + 0.5 (see geometry.py).
- Every image output is channels-last [F, H, W, C] (or [F, H, W] for ids and masks) and lies in
  [0, 1]; background pixels are 0 in every output. Video models that want [-1, 1] map `rgb` with
  2 * x - 1 themselves.
- `render_controls` is the one top-level pure function: parameters in, control images out, meant to
  run inside a jitted step on the accelerator. Clips [B, T, ...] are flattened to frames [B * T, ...]
  before the call (do not vmap it: the window ladder below uses lax.switch, which vmap turns into
  running every branch).
- `controls_to_input` concatenates the network-input controls into one [F, H, W, CONTROL_CHANNELS]
  array, channels in this order: dense (3) | semantic (head.NUM_CLASSES) | skeleton (3) | mask (1).

Rasterizer: every triangle tests a fixed square window of pixels anchored at its bounding box
(a "bounding-box splat"); depth and triangle id are packed into one int32 key (quantised inverse
depth in the high bits, id + 1 in the low bits) and resolved with one scatter-max per frame, so the
nearest triangle wins and exact ties go to the larger id. The window is chosen per call from a
ladder (4, 8, 16, ... pixels up to the image size) as the smallest one that holds the largest
triangle, so large triangles are always drawn completely; when the candidate count would be too
large, triangles are processed in chunks by lax.scan (same result, less memory). Coverage is tested
at pixel centres (a pixel belongs to a triangle when its centre lies inside or on an edge);
barycentrics are perspective-correct. Triangles with a vertex at depth <= `near` are dropped.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vlogger_jax import body as body_lib
from vlogger_jax import geometry
from vlogger_jax import head as head_lib

NEAR = 1e-3
# Candidate (triangle, pixel) pairs processed at once; more is faster on accelerators, less fits
# small CPU memory. 2^25 candidates take about 0.5 GB of temporaries.
DEFAULT_CANDIDATE_BUDGET = 2**25


class Fragments(NamedTuple):
  """Per-pixel rasterizer output for F frames of H x W pixels."""
  tri_id: jax.Array  # [F, H, W] int32, -1 where no triangle covers the pixel centre.
  bary: jax.Array  # [F, H, W, 3] float32 perspective-correct barycentrics, 0 on background.
  depth: jax.Array  # [F, H, W] float32 camera z of the visible surface, 0 on background.

  @property
  def mask(self):
    """[F, H, W] bool foreground."""
    return self.tri_id >= 0


def _window_ladder(height, width):
  sizes, w = [], 4
  while w < max(height, width):
    sizes.append(w)
    w *= 2
  sizes.append(max(height, width))
  return tuple(sizes)


def _edge(ax, ay, bx, by, px, py):
  return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def _splat_keys(tri_xy, tri_invz, x0, y0, valid, lo, scale, *, window, height, width, id_bits,
                budget):
  """Scatter-max of packed (depth, id) keys; returns [F, H * W] int32 keys, 0 on background."""
  num_frames, num_tris = x0.shape
  offs = jnp.arange(window, dtype=jnp.int32)
  oy, ox = [a.reshape(-1) for a in jnp.meshgrid(offs, offs, indexing="ij")]
  max_depth_q = 2**(31 - id_bits) - 1

  def keys_for(tri_xy, tri_invz, x0, y0, valid, ids):
    # Shapes [F, t, 1] against [w * w] -> [F, t, w * w].
    px = x0[..., None] + ox
    py = y0[..., None] + oy
    cx = px.astype(jnp.float32) + 0.5
    cy = py.astype(jnp.float32) + 0.5
    xs = [tri_xy[..., k, 0, None] for k in range(3)]
    ys = [tri_xy[..., k, 1, None] for k in range(3)]
    w0 = _edge(xs[1], ys[1], xs[2], ys[2], cx, cy)
    w1 = _edge(xs[2], ys[2], xs[0], ys[0], cx, cy)
    w2 = _edge(xs[0], ys[0], xs[1], ys[1], cx, cy)
    area = w0 + w1 + w2
    sign = jnp.where(area < 0, -1.0, 1.0)
    inside = (w0 * sign >= 0) & (w1 * sign >= 0) & (w2 * sign >= 0)
    inside &= valid[..., None] & (px < width) & (py < height)
    inv_area = 1.0 / jnp.where(area == 0, 1.0, area)
    invz = (w0 * tri_invz[..., 0, None] + w1 * tri_invz[..., 1, None]
            + w2 * tri_invz[..., 2, None]) * inv_area
    depth_q = jnp.clip(((invz - lo[:, None, None]) * scale[:, None, None]).astype(jnp.int32), 0,
                       max_depth_q)
    key = (depth_q << id_bits) | (ids[None, :, None] + 1)
    frame = jnp.arange(num_frames, dtype=jnp.int32)[:, None, None]
    flat = jnp.where(inside, (frame * height + py) * width + px, num_frames * height * width)
    return flat.reshape(-1), jnp.where(inside, key, 0).reshape(-1)

  out = jnp.zeros((num_frames * height * width,), jnp.int32)
  ids = jnp.arange(num_tris, dtype=jnp.int32)
  chunk = max(1, budget // max(1, num_frames * window * window))
  if chunk >= num_tris:
    flat, key = keys_for(tri_xy, tri_invz, x0, y0, valid, ids)
    out = out.at[flat].max(key, mode="drop")
  else:
    num_chunks = -(-num_tris // chunk)
    pad = num_chunks * chunk - num_tris

    def pad_split(a):
      a = jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
      a = a.reshape((a.shape[0], num_chunks, chunk) + a.shape[2:])
      return jnp.moveaxis(a, 1, 0)

    xs = tuple(pad_split(a) for a in (tri_xy, tri_invz, x0, y0, valid))
    ids_c = jnp.pad(ids, (0, pad)).reshape(num_chunks, chunk)

    def body(acc, inputs):
      *arrs, ids_i = inputs
      flat, key = keys_for(*arrs, ids_i)
      return acc.at[flat].max(key, mode="drop"), None

    out, _ = jax.lax.scan(body, out, xs + (ids_c,))
  return out.reshape(num_frames, height * width)


@functools.partial(jax.jit, static_argnames=("height", "width", "cull_backfaces", "budget"))
def rasterize(verts, faces, height: int, width: int, cull_backfaces: bool = False,
              budget: int = DEFAULT_CANDIDATE_BUDGET):
  """Screen vertices [F, V, 3] (x_px, y_px, camera z) and faces [T, 3] -> Fragments [F, H, W].

  With `cull_backfaces`, triangles whose outward normal ((v1 - v0) x (v2 - v0) in the camera
  frame) points away from the camera are skipped; they also stop counting for the window size.
  """
  verts = jnp.asarray(verts, jnp.float32)
  faces = jnp.asarray(faces, jnp.int32)
  num_frames = verts.shape[0]
  num_tris = faces.shape[0]
  id_bits = max(1, int(np.ceil(np.log2(num_tris + 2))))
  if id_bits > 19:
    raise ValueError(f"faces has {num_tris} triangles; the rasterizer packs ids into 19 bits and "
                     f"expects at most {2**19 - 2}.")
  tri = verts[:, faces]  # [F, T, 3, 3]
  tri_xy = tri[..., :2]
  z = tri[..., 2]
  valid = jnp.all(z > NEAR, axis=-1)
  a = tri_xy
  area = _edge(a[..., 0, 0], a[..., 0, 1], a[..., 1, 0], a[..., 1, 1], a[..., 2, 0], a[..., 2, 1])
  # A front-facing triangle (normal towards the camera) has negative signed area on screen,
  # because the image's y axis points down.
  valid &= (area < 0) if cull_backfaces else (area != 0)
  tri_invz = 1.0 / jnp.where(z > NEAR, z, 1.0)
  # Candidate pixel columns i have centres i + 0.5 within [xmin, xmax].
  xmin = jnp.ceil(jnp.min(tri_xy[..., 0], -1) - 0.5)
  xmax = jnp.floor(jnp.max(tri_xy[..., 0], -1) - 0.5)
  ymin = jnp.ceil(jnp.min(tri_xy[..., 1], -1) - 0.5)
  ymax = jnp.floor(jnp.max(tri_xy[..., 1], -1) - 0.5)
  valid &= (xmax >= xmin) & (ymax >= ymin) & (xmax >= 0) & (ymax >= 0)
  valid &= (xmin <= width - 1) & (ymin <= height - 1)
  xmin = jnp.clip(xmin, 0, width - 1)
  ymin = jnp.clip(ymin, 0, height - 1)
  xmax = jnp.clip(xmax, 0, width - 1)
  ymax = jnp.clip(ymax, 0, height - 1)
  extent = jnp.where(valid, jnp.maximum(xmax - xmin, ymax - ymin) + 1, 0).max()
  x0 = xmin.astype(jnp.int32)
  y0 = ymin.astype(jnp.int32)
  # Inverse depth is quantised per frame over the range its vertices span, so the key keeps the
  # full 31 - id_bits bits of depth resolution whatever the scene's distance.
  vz = verts[..., 2]
  vis = vz > NEAR
  inv = 1.0 / jnp.where(vis, vz, 1.0)
  lo = jnp.min(jnp.where(vis, inv, jnp.inf), axis=-1)
  hi = jnp.max(jnp.where(vis, inv, -jnp.inf), axis=-1)
  lo = jnp.where(jnp.isfinite(lo), lo, 0.0)
  hi = jnp.where(jnp.isfinite(hi), hi, 1.0)
  scale = (2.0**(31 - id_bits) - 2) / jnp.maximum(hi - lo, 1e-12)

  ladder = _window_ladder(height, width)
  branches = [functools.partial(_splat_keys, window=w, height=height, width=width, id_bits=id_bits,
                                budget=budget) for w in ladder]
  index = jnp.searchsorted(jnp.asarray(ladder, jnp.float32), extent.astype(jnp.float32))
  index = jnp.clip(index, 0, len(ladder) - 1)
  keys = jax.lax.switch(index, branches, tri_xy, tri_invz, x0, y0, valid, lo, scale)

  tri_id = (keys & (2**id_bits - 1)) - 1
  tri_id = tri_id.reshape(num_frames, height, width)
  return _resolve(verts, faces, tri_id, height, width)


def _resolve(verts, faces, tri_id, height, width):
  """Recomputes perspective-correct barycentrics and depth at pixel centres of the winning triangles."""
  num_frames = verts.shape[0]
  fg = tri_id >= 0
  safe = jnp.where(fg, tri_id, 0)
  corner_idx = faces[safe]  # [F, H, W, 3]
  corners = _gather_corners(verts, corner_idx)  # [F, H, W, 3, 3]
  cy, cx = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32) + 0.5,
                        jnp.arange(width, dtype=jnp.float32) + 0.5, indexing="ij")
  xs, ys, zs = corners[..., 0], corners[..., 1], corners[..., 2]  # [F, H, W, 3]
  w0 = _edge(xs[..., 1], ys[..., 1], xs[..., 2], ys[..., 2], cx, cy)
  w1 = _edge(xs[..., 2], ys[..., 2], xs[..., 0], ys[..., 0], cx, cy)
  w2 = _edge(xs[..., 0], ys[..., 0], xs[..., 1], ys[..., 1], cx, cy)
  lam = jnp.stack([w0, w1, w2], -1)
  area = jnp.sum(lam, -1, keepdims=True)
  lam = jnp.clip(lam / jnp.where(area == 0, 1.0, area), 0.0, 1.0)
  persp = lam / jnp.where(zs > NEAR, zs, 1.0)
  denom = jnp.sum(persp, -1, keepdims=True)
  bary = persp / jnp.where(denom > 0, denom, 1.0)
  depth = 1.0 / jnp.where(denom[..., 0] > 0, denom[..., 0], 1.0)
  bary = jnp.where(fg[..., None], bary, 0.0)
  depth = jnp.where(fg, depth, 0.0)
  return Fragments(tri_id=tri_id, bary=bary, depth=depth)


def _gather_corners(verts, corner_idx):
  """verts [F, V, C], corner_idx [F, H, W, 3] -> [F, H, W, 3, C]."""
  num_frames = verts.shape[0]
  flat = corner_idx.reshape(num_frames, -1)
  out = jnp.take_along_axis(verts, flat[..., None], axis=1)
  return out.reshape(corner_idx.shape + (verts.shape[-1],))


def interpolate(frags: Fragments, faces, attrs):
  """Vertex attributes [V, C] or [F, V, C] -> per-pixel values [F, H, W, C], 0 on background."""
  num_frames = frags.tri_id.shape[0]
  attrs = jnp.asarray(attrs)
  if attrs.ndim == 2:
    attrs = jnp.broadcast_to(attrs[None], (num_frames,) + attrs.shape)
  safe = jnp.where(frags.mask, frags.tri_id, 0)
  corners = _gather_corners(attrs, jnp.asarray(faces)[safe])
  out = jnp.sum(frags.bary[..., None] * corners, axis=-2)
  return jnp.where(frags.mask[..., None], out, 0.0)


# ----------------------------------------------------------------------------------------------
# Control images.

# Channels of `controls_to_input`, in this order: dense (3) | semantic (NUM_CLASSES) | skeleton
# (3) | mask (1). CONTROL_LAYOUT names each group's slice; everything that reads the network
# input by channel (e.g. a picture of the controls) goes through it.
def _layout(groups) -> dict:
  out, start = {}, 0
  for name, size in groups:
    out[name] = slice(start, start + size)
    start += size
  return out


CONTROL_LAYOUT = _layout((("dense", 3), ("semantic", head_lib.NUM_CLASSES), ("skeleton", 3),
                          ("mask", 1)))
CONTROL_CHANNELS = CONTROL_LAYOUT["mask"].stop


class Appearance(NamedTuple):
  """Colours and light of the shaded render; each field broadcasts against the frames ([3] or [F, 3])."""
  skin: object = (0.78, 0.57, 0.45)
  hair: object = (0.20, 0.13, 0.08)
  iris: object = (0.25, 0.42, 0.58)
  light_dir: object = (-0.55, -0.5, -0.65)  # camera frame, pointing from the surface to the light
  ambient: object = 0.38
  diffuse: object = 0.72
  specular: object = 0.18


def class_albedo(app: Appearance):
  """Appearance -> per-class albedo [..., NUM_CLASSES, 3] in [0, 1]."""
  skin = jnp.asarray(app.skin, jnp.float32)
  hair = jnp.asarray(app.hair, jnp.float32)
  iris = jnp.asarray(app.iris, jnp.float32)
  shape = jnp.broadcast_shapes(skin.shape, hair.shape, iris.shape)
  skin, hair, iris = [jnp.broadcast_to(c, shape) for c in (skin, hair, iris)]
  const = lambda rgb: jnp.broadcast_to(jnp.asarray(rgb, jnp.float32), shape)
  table = {
      "skin": skin, "left_brow": hair * 0.85, "right_brow": hair * 0.85,
      "left_eye": const((0.93, 0.91, 0.87)), "right_eye": const((0.93, 0.91, 0.87)),
      "left_iris": iris, "right_iris": iris, "nose": skin, "upper_lip": skin, "lower_lip": skin,
      "mouth_interior": const((0.33, 0.09, 0.09)), "teeth": const((0.94, 0.91, 0.83)),
      "ears": skin, "neck": skin * 0.96, "hair": hair,
  }
  return jnp.stack([table[name] for name in head_lib.CLASS_NAMES], axis=-2)


# Specular strength per class, relative to Appearance.specular: wet eyes and lips shine.
_CLASS_SPECULAR = np.array([{"left_eye": 3.0, "right_eye": 3.0, "left_iris": 3.0,
                             "right_iris": 3.0, "upper_lip": 1.5, "lower_lip": 1.5, "hair": 0.4,
                             "left_brow": 0.2, "right_brow": 0.2, "mouth_interior": 0.3}.get(n, 1.0)
                            for n in head_lib.CLASS_NAMES], np.float32)


def _as_frames(x, num_frames, last_shape):
  x = jnp.asarray(x, jnp.float32)
  return jnp.broadcast_to(x, (num_frames,) + tuple(last_shape))


def draw_skeleton(keypoints, visibility, height: int, width: int):
  """Keypoints [F, 75, 2] (normalised), visibility [F, 75] -> skeleton image [F, H, W, 3] in [0, 1].

  Limbs are capsules and joints discs, coloured per part (body.PART_COLOURS) with a width that is a
  fixed fraction of the image size, anti-aliased over one pixel. Where primitives overlap, the
  one with the larger coverage wins and joints win ties, so the result does not depend on order.
  """
  kp, vis = body_lib.sanitize(keypoints, visibility)
  pts = body_lib.to_pixels(kp, height, width)
  scale = float(min(height, width))
  edges = body_lib.EDGES
  seg_a = jnp.concatenate([pts[:, edges[:, 0]], pts], axis=1)  # [F, P, 2]
  seg_b = jnp.concatenate([pts[:, edges[:, 1]], pts], axis=1)
  parts = np.concatenate([body_lib.EDGE_PARTS, body_lib.KEYPOINT_PARTS])
  radius = body_lib.PART_WIDTH[parts] * scale
  radius[len(edges):] *= 1.6  # joints are a little wider than their limbs
  radius = np.maximum(radius, 0.6)
  valid = jnp.concatenate([body_lib.edge_visible(kp, vis), body_lib.is_visible(kp, vis)], axis=1)
  ab = seg_b - seg_a
  inv_len2 = 1.0 / jnp.maximum(jnp.sum(ab * ab, -1), 1e-6)
  ys = jnp.arange(height, dtype=jnp.float32) + 0.5
  xs = jnp.arange(width, dtype=jnp.float32) + 0.5
  px = xs[None, None, :, None]
  py = ys[None, :, None, None]
  ax, ay = seg_a[:, None, None, :, 0], seg_a[:, None, None, :, 1]
  bx, by = ab[:, None, None, :, 0], ab[:, None, None, :, 1]
  t = jnp.clip(((px - ax) * bx + (py - ay) * by) * inv_len2[:, None, None, :], 0.0, 1.0)
  dx = px - ax - t * bx
  dy = py - ay - t * by
  dist = jnp.sqrt(dx * dx + dy * dy)
  cover = jnp.clip(jnp.asarray(radius)[None, None, None, :] + 0.5 - dist, 0.0, 1.0)
  cover = jnp.where(valid[:, None, None, :], cover, 0.0)
  # One fused max-reduction over primitives: coverage (8 bits) above the primitive index.
  num_prims = len(parts)
  key = jnp.round(cover * 255.0) * 256.0 + jnp.arange(num_prims, dtype=jnp.float32)
  best = jnp.max(key, axis=-1)
  prim = (best % 256.0).astype(jnp.int32)
  cov = jnp.floor(best / 256.0) / 255.0
  colours = jnp.asarray(body_lib.PART_COLOURS[parts])
  return colours[prim] * cov[..., None]


def render_controls(model: head_lib.HeadModel, shape, expression, head_pose, body_kp, body_vis,
                    fov, size: int, appearance: Appearance | None = None,
                    budget: int = DEFAULT_CANDIDATE_BUDGET):
  """All control images for F frames at size x size; shape [F, 64] or [64], expression [F, 64],
  head_pose [F, 9], body_kp [F, 75, 2], body_vis [F, 75], fov [F] or scalar (degrees).

  Returns a dict of float32 arrays in [0, 1], background 0:
    dense [F, S, S, 3]: canonical (mean template) coordinates of the visible surface, scaled by
      the template's bounding box; semantic [F, S, S, NUM_CLASSES]: one-hot face classes;
    skeleton [F, S, S, 3]: body skeleton; rgb [F, S, S, 3]: albedo x (ambient + Lambert) +
      specular; mask [F, S, S, 1]: head foreground; depth [F, S, S]: camera z in metres;
    and tri_id [F, S, S] int32 (-1 on background).
  """
  expression = jnp.asarray(expression, jnp.float32)
  num_frames = expression.shape[0]
  body_kp = jnp.asarray(body_kp, jnp.float32)
  body_vis = jnp.asarray(body_vis, jnp.float32)
  body_lib.check_shapes(body_kp, body_vis)
  head_pose = jnp.asarray(head_pose, jnp.float32)
  if head_pose.shape != (num_frames, head_lib.HEAD_POSE_DIM):
    raise ValueError(f"head_pose has shape {head_pose.shape}; expected ({num_frames}, 9) = 6-D "
                     "rotation and translation per frame.")
  app = appearance or Appearance()
  height = width = int(size)
  verts = head_lib.forward(model, shape, expression, head_pose)  # [F, V, 3]
  fov = _as_frames(fov, num_frames, ())
  pix, z = geometry.project(verts, fov, height, width)
  frags = rasterize(jnp.concatenate([pix, z[..., None]], -1), model.faces, height, width,
                    cull_backfaces=True, budget=budget)
  mask = frags.mask[..., None].astype(jnp.float32)
  fg = frags.mask[..., None]
  labels = jnp.where(frags.mask, model.tri_labels[jnp.maximum(frags.tri_id, 0)], 0)

  lo = jnp.min(model.template, axis=0)
  hi = jnp.max(model.template, axis=0)
  dense = interpolate(frags, model.faces, (model.template - lo) / jnp.maximum(hi - lo, 1e-9))
  semantic = jax.nn.one_hot(labels, head_lib.NUM_CLASSES, dtype=jnp.float32) * mask

  normals = head_lib.vertex_normals(verts, model.faces)
  n = interpolate(frags, model.faces, normals)
  n = n / jnp.maximum(jnp.linalg.norm(n, axis=-1, keepdims=True), 1e-9)
  pos = interpolate(frags, model.faces, verts)
  view = -pos / jnp.maximum(jnp.linalg.norm(pos, axis=-1, keepdims=True), 1e-9)
  # Normals of surfaces seen from behind (the inside of the lips, the back of an ear) face away.
  n = jnp.where(jnp.sum(n * view, -1, keepdims=True) < 0, -n, n)
  light = _as_frames(app.light_dir, num_frames, (3,))
  light = light / jnp.linalg.norm(light, axis=-1, keepdims=True)
  light = light[:, None, None, :]
  lambert = jnp.clip(jnp.sum(n * light, -1, keepdims=True), 0.0, 1.0)
  half = light + view
  half = half / jnp.maximum(jnp.linalg.norm(half, axis=-1, keepdims=True), 1e-9)
  spec = jnp.clip(jnp.sum(n * half, -1, keepdims=True), 0.0, 1.0) ** 24
  albedo_table = jnp.broadcast_to(class_albedo(app), (num_frames, head_lib.NUM_CLASSES, 3))
  albedo = jnp.take_along_axis(albedo_table[:, None, :, :],
                               labels.reshape(num_frames, -1)[:, :, None, None], axis=2)
  albedo = albedo.reshape(num_frames, height, width, 3)
  albedo = albedo * interpolate(frags, model.faces, model.vertex_tint)
  ambient = _as_frames(app.ambient, num_frames, ())[:, None, None, None]
  diffuse = _as_frames(app.diffuse, num_frames, ())[:, None, None, None]
  specular = _as_frames(app.specular, num_frames, ())[:, None, None, None]
  spec_k = jnp.asarray(_CLASS_SPECULAR)[labels][..., None]
  rgb = albedo * (ambient + diffuse * lambert) + specular * spec_k * spec
  rgb = jnp.where(fg, jnp.clip(rgb, 0.0, 1.0), 0.0)

  skeleton = draw_skeleton(body_kp, body_vis, height, width)
  return {"dense": dense, "semantic": semantic, "skeleton": skeleton, "rgb": rgb, "mask": mask,
          "depth": frags.depth, "tri_id": frags.tri_id}


def controls_rgb(controls):
  """Network-input controls [..., CONTROL_CHANNELS] -> RGB [..., 3] in [0, 1] to look at: the
  head's dense map (canonical coordinates as colours) over the body skeleton."""
  return jnp.maximum(controls[..., CONTROL_LAYOUT["dense"]],
                     controls[..., CONTROL_LAYOUT["skeleton"]])


def controls_to_input(controls):
  """Control dict -> network input [F, H, W, CONTROL_CHANNELS]: dense | semantic | skeleton | mask
  (CONTROL_LAYOUT)."""
  return jnp.concatenate([controls[name] for name in CONTROL_LAYOUT], axis=-1)
