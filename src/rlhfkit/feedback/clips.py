"""Clips: trajectory fragments rendered to short looping videos for a person to compare.

A :class:`~rlhfkit.feedback.records.Fragment` holds observations, actions and rewards — no
simulator state — so a clip is rendered by **restoring the env's state from each observation**
and calling ``render()`` (``render_mode="rgb_array"``). How to restore it is specific to each
environment; :data:`STATE_SETTERS` holds one setter per environment family:

- ``Pendulum``: ``θ = atan2(sin θ, cos θ)`` and ``θ̇`` from ``(cos θ, sin θ, θ̇)``; the action
  is drawn as the torque arrow.
- ``CartPole`` and ``rlhfkit/CartPoleCos``: the state is the observation ``(x, ẋ, θ, θ̇)``.
- ``MountainCar`` (and ``Continuous``): ``(position, velocity)``; ``Acrobot``: angles from
  their cosines and sines.
- MuJoCo locomotion (``HalfCheetah``, ``Hopper``, ``Walker2d``, ``Swimmer``, ``Ant``,
  ``InvertedPendulum``): the observation is ``qpos[k:]`` then ``qvel`` (the first ``k``
  coordinates — the x (and y) position — are excluded from it). The root position starts at 0
  and is integrated from the root velocity ``qvel[:k]`` over the fragment, so running forward
  shows as running forward. Use ``MUJOCO_GL=egl`` on a machine without a display (set here
  when unset).

Videos are written with ``imageio`` and the ``ffmpeg`` that ships in the ``imageio-ffmpeg``
wheel: H.264 MP4 (``yuv420p``, ``+faststart``, plays in every browser) or VP9 WebM.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rlhfkit.feedback.records import Fragment

__all__ = ["STATE_SETTERS", "ClipRenderer", "register_state_setter", "render_clip", "state_setter_for"]

StateSetter = Callable[[Any, np.ndarray, np.ndarray], None]
"""``setter(unwrapped_env, obs (obs_dim,), act (act_dim,) or ())`` puts the env in the state
the observation was taken in, ready for ``render()``."""


def _pendulum(env: Any, obs: np.ndarray, act: np.ndarray) -> None:
    env.state = np.array([math.atan2(float(obs[1]), float(obs[0])), float(obs[2])], dtype=np.float64)
    env.last_u = float(np.asarray(act).reshape(-1)[0]) if np.asarray(act).size else None


def _state_is_obs(env: Any, obs: np.ndarray, act: np.ndarray) -> None:
    env.state = np.array(obs, dtype=np.float64)


def _acrobot(env: Any, obs: np.ndarray, act: np.ndarray) -> None:
    c1, s1, c2, s2, d1, d2 = (float(x) for x in obs[:6])
    env.state = np.array([math.atan2(s1, c1), math.atan2(s2, c2), d1, d2], dtype=np.float64)


class _MujocoSetter:
    """Restores ``qpos[excluded:]`` and ``qvel`` from the observation; ``qpos[:excluded]`` (the
    root's x, y position, absent from the observation) comes from ``root`` — :class:`ClipRenderer`
    integrates it from the root velocity so a clip shows forward progress — or is 0."""

    mujoco = True

    def __init__(self, excluded: int) -> None:
        self.excluded = excluded

    def root_velocity(self, env: Any, obs: np.ndarray) -> np.ndarray:
        """The root's ``(excluded,)`` velocity in the observation (``qvel[:excluded]``)."""
        nq = int(env.model.nq)
        return np.asarray(obs[nq - self.excluded: nq], dtype=np.float64)

    def __call__(self, env: Any, obs: np.ndarray, act: np.ndarray, root: np.ndarray | None = None) -> None:
        k = self.excluded
        nq, nv = int(env.model.nq), int(env.model.nv)
        need = nq - k + nv
        if obs.shape[0] < need:
            raise ValueError(f"observation has {obs.shape[0]} values, but qpos[{k}:] and qvel need {need}: "
                             "was the env made with exclude_current_positions_from_observation=False?")
        qpos = np.zeros(nq, dtype=np.float64)
        if root is not None:
            qpos[:k] = root
        qpos[k:] = obs[: nq - k]
        env.set_state(qpos, np.asarray(obs[nq - k: need], dtype=np.float64))


def _mujoco(excluded: int) -> StateSetter:
    return _MujocoSetter(excluded)


STATE_SETTERS: dict[str, StateSetter] = {
    "Pendulum": _pendulum,
    "CartPole": _state_is_obs,
    "rlhfkit/CartPoleCos": _state_is_obs,
    "MountainCar": _state_is_obs,
    "MountainCarContinuous": _state_is_obs,
    "Acrobot": _acrobot,
    "HalfCheetah": _mujoco(1),
    "Hopper": _mujoco(1),
    "Walker2d": _mujoco(1),
    "Swimmer": _mujoco(2),
    "Ant": _mujoco(2),
    "InvertedPendulum": _mujoco(0),
}
"""Environment family (the id without ``-vN``) → state setter. Add yours with
:func:`register_state_setter`."""


def _family(env_id: str) -> str:
    head, sep, version = env_id.rpartition("-v")
    return head if sep and version.isdigit() else env_id


def register_state_setter(env_id: str, setter: StateSetter) -> None:
    """Register how to restore ``env_id``'s state from an observation (an id or a family name)."""
    STATE_SETTERS[_family(env_id)] = setter


def state_setter_for(env_id: str) -> StateSetter:
    """The state setter of ``env_id`` (looked up by exact id, then by family).

    Raises:
        ValueError: if none is registered, listing the supported families and how to add one.
    """
    setter = STATE_SETTERS.get(env_id) or STATE_SETTERS.get(_family(env_id))
    if setter is None:
        raise ValueError(
            f"cannot render clips of {env_id!r}: no state setter is registered for it (a fragment holds only "
            f"observations, so the env's state must be restored from each one). Supported: "
            f"{', '.join(sorted(STATE_SETTERS))}. Add one with rlhfkit.feedback.clips.register_state_setter."
        )
    return setter


_MAKE_LOCK = threading.Lock()


class ClipRenderer:
    """Renders fragments of one environment to video files.

    Args:
        env_id: gymnasium id (its family must be in :data:`STATE_SETTERS`).
        frame_skip: render every ``frame_skip``-th step (playback keeps real time).
        max_size: frames larger than this (pixels per side) are downscaled by an integer factor
            (MuJoCo renders at ``min(max_size, 480)`` directly: software GL is slow). The page
            shows clips at their own size, never blurrily enlarged, so this is the on-screen size.
        fmt: ``mp4`` (H.264) or ``webm`` (VP9).
        fps: frames per second; default the env's ``render_fps`` divided by ``frame_skip``.
        min_seconds: a clip shorter than this in real time is played slower so it lasts this long
            (a CartPole fragment of 25 steps is 0.5 s at 50 fps: too short to judge); 0 keeps
            real time.

    The environment is created lazily, in the thread that first renders (MuJoCo's GL context
    belongs to the thread that made it), and kept for later clips.

    Raises:
        ValueError: for an env without a state setter, or bad arguments.
    """

    def __init__(self, env_id: str, *, frame_skip: int = 1, max_size: int = 640,
                 fmt: Literal["mp4", "webm"] = "mp4", fps: float | None = None, min_seconds: float = 1.5) -> None:
        self.setter = state_setter_for(env_id)
        if frame_skip < 1:
            raise ValueError(f"frame_skip must be >= 1, got {frame_skip}")
        if fmt not in ("mp4", "webm"):
            raise ValueError(f"fmt must be 'mp4' or 'webm', got {fmt!r}")
        if max_size < 16:
            raise ValueError(f"max_size must be >= 16 pixels, got {max_size}")
        if not min_seconds >= 0:
            raise ValueError(f"min_seconds must be >= 0, got {min_seconds}")
        self.min_seconds = float(min_seconds)
        self.env_id, self.frame_skip, self.max_size, self.fmt, self._fps = env_id, frame_skip, max_size, fmt, fps
        self._env: Any = None

    def _make(self) -> Any:
        if self._env is not None:
            return self._env
        # Creating an env and its first render import lazily (pygame loads pygame.surfarray on
        # first use, not thread-safely): renderers on several threads would race there, so the
        # first env and render of every renderer happen under one lock.
        with _MAKE_LOCK:
            os.environ.setdefault("MUJOCO_GL", "egl")
            # offscreen frames need no display or sound: without these SDL (pygame) looks for one
            # and prints "XDG_RUNTIME_DIR is invalid or not set" on a headless machine
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
            os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
            import gymnasium as gym

            if self.env_id not in gym.registry and self.env_id.startswith("rlhfkit/"):
                import rlhfkit.control.envs  # noqa: F401  (registers rlhfkit/CartPoleCos-v0)
            kwargs: dict[str, Any] = {}
            if getattr(self.setter, "mujoco", False):  # render at the clip's size: software GL is slow
                kwargs = {"width": min(self.max_size, 480), "height": min(self.max_size, 480)}
            env = gym.make(self.env_id, render_mode="rgb_array", **kwargs)
            env.reset(seed=0)
            env.render()
            self._env = env
        return self._env

    @property
    def fps(self) -> float:
        """Real-time frames per second (or the ``fps`` given)."""
        if self._fps is not None:
            return float(self._fps)
        env = self._make()
        return float(env.metadata.get("render_fps", 30)) / self.frame_skip

    def playback_fps(self, n_frames: int) -> float:
        """Frames per second of a clip of ``n_frames``: :attr:`fps`, slowed so it lasts ``min_seconds``."""
        if self._fps is not None or self.min_seconds == 0:
            return self.fps
        return min(self.fps, max(n_frames, 1) / self.min_seconds)

    def frames(self, fragment: Fragment) -> np.ndarray:
        """``(F, H, W, 3)`` uint8 frames of ``fragment``, ``F = ceil(T / frame_skip)``; H, W even."""
        env = self._make()
        inner = env.unwrapped
        roots = None
        if isinstance(self.setter, _MujocoSetter) and self.setter.excluded > 0:
            # integrate the root position from its velocity: x_t = Σ_{s<t} ẋ_s · dt
            vel = np.stack([self.setter.root_velocity(inner, o) for o in fragment.obs])  # (T, k)
            roots = np.vstack([np.zeros((1, vel.shape[1])), np.cumsum(vel[:-1] * float(inner.dt), axis=0)])
        out = []
        for t in range(0, len(fragment), self.frame_skip):
            if roots is not None:
                self.setter(inner, fragment.obs[t], fragment.acts[t], roots[t])  # type: ignore[call-arg]
            else:
                self.setter(inner, fragment.obs[t], fragment.acts[t])
            frame = np.asarray(env.render())
            if frame.ndim != 3:
                raise ValueError(f"{self.env_id} rendered a frame of shape {frame.shape}, expected (H, W, 3)")
            out.append(self._resize(frame[..., :3]))
        return np.stack(out).astype(np.uint8)

    def _resize(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        k = max(1, math.ceil(max(h, w) / self.max_size))
        if k > 1:  # box filter: mean over k×k blocks
            h2, w2 = h // k, w // k
            frame = frame[: h2 * k, : w2 * k].reshape(h2, k, w2, k, 3).mean(axis=(1, 3))
        h, w = frame.shape[:2]
        return frame[: h - h % 2, : w - w % 2]  # yuv420p needs even sides

    def render(self, fragment: Fragment, path: str | Path) -> Path:
        """Write ``fragment`` as a looping-ready video at ``path`` (suffix set by ``fmt``).

        The file is written to a temporary name and moved into place, so a reader never sees
        half a video.

        Returns:
            The path written.
        """
        import imageio.v2 as imageio

        path = Path(path).with_suffix("." + self.fmt)
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = self.frames(fragment)
        tmp = path.with_name(path.stem + ".tmp" + path.suffix)
        if self.fmt == "mp4":
            codec, params = "libx264", ["-preset", "veryfast", "-crf", "26", "-movflags", "+faststart"]
        else:
            codec, params = "libvpx-vp9", ["-deadline", "realtime", "-cpu-used", "8", "-b:v", "0", "-crf", "40"]
        writer = imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=self.playback_fps(len(frames)), codec=codec, quality=None,
                                    pixelformat="yuv420p", macro_block_size=2, ffmpeg_params=params,
                                    ffmpeg_log_level="error")
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()
        os.replace(tmp, path)
        return path

    def close(self) -> None:
        """Close the environment (and its renderer)."""
        if self._env is not None:
            self._env.close()
            self._env = None


def render_clip(env_id: str, fragment: Fragment, path: str | Path, **kwargs: Any) -> Path:
    """Render one fragment of ``env_id`` to a video file (see :class:`ClipRenderer` for ``kwargs``)."""
    renderer = ClipRenderer(env_id, **kwargs)
    try:
        return renderer.render(fragment, path)
    finally:
        renderer.close()
