"""Shared machinery for the MuJoCo tasks: model loading, observation spaces, rendering, stability.

Every task is a small MJCF scene whose agent tracks an ABSOLUTE position target (the action), as
in Push-T. Subclasses only describe what is task specific: how to sample an initial state, how to
turn an action into actuator controls, what the observation vector holds, and when the episode is
a success / which strategy ("mode") the trajectory followed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

ASSETS_DIR = Path(__file__).parent / "assets"

# The observation sets a task offers: "state" is one low-dim vector, "image" a camera frame plus
# the agent's own position (what Diffusion Policy calls an image policy's observations).
OBS_TYPES = ("state", "image")

# Every state entry is a position in metres inside a < 0.5 m workspace, a sin/cos or a finger
# opening, so +-1 bounds all of them with margin (finite bounds keep gymnasium's checker quiet).
STATE_BOUND = 1.0

# MuJoCo counts these warnings in data.warning; each one means it had to reset the state because
# positions, velocities or accelerations blew up, so the episode can no longer be trusted.
INSTABILITY_WARNINGS = (
    mujoco.mjtWarning.mjWARN_BADQPOS,
    mujoco.mjtWarning.mjWARN_BADQVEL,
    mujoco.mjtWarning.mjWARN_BADQACC,
    mujoco.mjtWarning.mjWARN_BADCTRL,
)


class SimulationUnstableError(RuntimeError):
    """Raised when the physics of a task diverges (NaN/inf state or a MuJoCo reset warning)."""


@dataclass(frozen=True)
class TaskSpec:
    """Static description of a task, shared by the env, its expert and the benchmark code."""

    name: str
    env_id: str
    mode_names: tuple[str, ...]
    mode_probs: tuple[float, ...]
    max_episode_steps: int
    control_hz: float
    action_dim: int
    description: str
    obs_types: tuple[str, ...] = OBS_TYPES


class MujocoTaskEnv(gym.Env):
    """Base class of the three tasks (see module docstring).

    Subclasses set the class attributes below and implement the ``_`` hooks. Observations are
    ``{"state": float32[Ds]}`` with ``obs="state"`` and ``{"image": uint8[S, S, 3],
    "agent_pos": float32[Dp]}`` with ``obs="image"``; actions are float32 absolute targets of
    shape ``[action_dim]``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    task: ClassVar[TaskSpec]
    xml_file: ClassVar[str]
    camera_name: ClassVar[str]
    state_dim: ClassVar[int]
    agent_pos_dim: ClassVar[int]
    action_low: ClassVar[tuple[float, ...]]
    action_high: ClassVar[tuple[float, ...]]

    def __init__(
        self,
        obs: str = "state",
        render_mode: str | None = None,
        image_size: int = 96,
    ) -> None:
        if obs not in OBS_TYPES:
            raise ValueError(f"obs must be one of {OBS_TYPES}, got {obs!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        self.obs = obs
        self.render_mode = render_mode
        self.image_size = int(image_size)

        self.model = mujoco.MjModel.from_xml_path(str(ASSETS_DIR / self.xml_file))
        # Shadows and multisampling make software (EGL/OSMesa) rendering ~15x slower and add
        # nothing at 96x96; they must be off before the renderer's GL context is created.
        self.model.vis.quality.shadowsize = 0
        self.model.vis.quality.offsamples = 0
        self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, self.image_size)
        self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, self.image_size)
        self.data = mujoco.MjData(self.model)

        control_dt = 1.0 / self.task.control_hz
        self.frame_skip = round(control_dt / self.model.opt.timestep)
        self._camera_id = mujoco.mj_name2id(
            self.model, mujoco.mjtObj.mjOBJ_CAMERA, self.camera_name
        )
        self._renderer: mujoco.Renderer | None = None
        # The last rendered frame is reused until the state changes, so image observations and
        # render() on the same step cost one render, not two.
        self._frame: np.ndarray | None = None

        self.action_space = spaces.Box(
            low=np.asarray(self.action_low, dtype=np.float32),
            high=np.asarray(self.action_high, dtype=np.float32),
            dtype=np.float32,
        )
        if obs == "state":
            self.observation_space = spaces.Dict(
                {"state": spaces.Box(-STATE_BOUND, STATE_BOUND, (self.state_dim,), np.float32)}
            )
        else:
            self.observation_space = spaces.Dict(
                {
                    "image": spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
                    "agent_pos": spaces.Box(
                        -STATE_BOUND, STATE_BOUND, (self.agent_pos_dim,), np.float32
                    ),
                }
            )
        self.mode: int = -1
        self._steps = 0

    # ------------------------------------------------------------------ public attributes

    @property
    def task_name(self) -> str:
        """Short task name, its key in the task registry."""
        return self.task.name

    @property
    def mode_names(self) -> tuple[str, ...]:
        """Names of the strategies that ``info["mode"]`` indexes."""
        return self.task.mode_names

    @property
    def control_hz(self) -> float:
        """Env steps per simulated second."""
        return self.task.control_hz

    # ------------------------------------------------------------------ hooks for subclasses

    def _sample_initial_state(self) -> None:
        """Write a random initial state into ``self.data`` using ``self.np_random``."""
        raise NotImplementedError

    def _set_control(self, action: np.ndarray) -> None:
        """Map a clipped action to ``self.data.ctrl``."""
        raise NotImplementedError

    def _state_vector(self) -> np.ndarray:
        """Low-dimensional task state, shape ``[state_dim]``."""
        raise NotImplementedError

    def _agent_pos(self) -> np.ndarray:
        """Proprioception for image observations, shape ``[agent_pos_dim]``."""
        raise NotImplementedError

    def _update_mode(self) -> None:
        """Classify the strategy from the current state; set ``self.mode`` once it is decided."""
        raise NotImplementedError

    def _is_success(self) -> bool:
        raise NotImplementedError

    def _is_failure(self) -> bool:
        """Irrecoverable failure that ends the episode early (default: none)."""
        return False

    def _extra_info(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ gym API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Sample a new initial state (fully determined by ``seed``) and return ``(obs, info)``."""
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)  # also clears the warning counters
        self._sample_initial_state()
        mujoco.mj_forward(self.model, self.data)
        self.mode = -1
        self._steps = 0
        self._frame = None
        info = {"is_success": False, "mode": -1, **self._extra_info()}
        return self._get_obs(), info

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Track the absolute target ``action`` for one control period (several physics steps)."""
        action = np.asarray(action, dtype=np.float64).reshape(self.action_space.shape)
        if not np.all(np.isfinite(action)):
            raise SimulationUnstableError(
                f"{self.task.name}: non-finite action {action.tolist()} at step {self._steps}"
            )
        action = np.clip(action, self.action_space.low, self.action_space.high)
        self._set_control(action)
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        self._check_stable()
        self._steps += 1
        self._frame = None

        self._update_mode()
        success = self._is_success()
        failure = (not success) and self._is_failure()
        info = {"is_success": success, "mode": self.mode, **self._extra_info()}
        # Sparse reward: the benchmark scores success rate, and a shaped reward would only invite
        # tuning that the imitation learners never see.
        return self._get_obs(), float(success), success or failure, False, info

    def render(self) -> np.ndarray | None:
        """Return the fixed-camera view as uint8 ``[image_size, image_size, 3]`` (rgb_array)."""
        if self.render_mode is None:
            return None
        return self._render_frame().copy()

    def close(self) -> None:
        """Free the GL context of the renderer (if one was created)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._frame = None

    # ------------------------------------------------------------------ helpers

    def _get_obs(self) -> dict[str, np.ndarray]:
        if self.obs == "state":
            return {"state": self._state_vector().astype(np.float32)}
        return {
            "image": self._render_frame().copy(),
            "agent_pos": self._agent_pos().astype(np.float32),
        }

    def _render_frame(self) -> np.ndarray:
        if self._frame is None:
            if self._renderer is None:
                # Created lazily: state-only users never need a GL context.
                self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
            self._renderer.update_scene(self.data, camera=self._camera_id)
            self._frame = self._renderer.render()
        return self._frame

    def _check_stable(self) -> None:
        bad = [w.name for w in INSTABILITY_WARNINGS if self.data.warning[w].number > 0]
        finite = np.all(np.isfinite(self.data.qpos)) and np.all(np.isfinite(self.data.qvel))
        if bad or not finite:
            what = ", ".join(bad) if bad else "non-finite qpos/qvel"
            raise SimulationUnstableError(
                f"{self.task.name}: simulation became unstable at step {self._steps} ({what}); "
                "MuJoCo reset the state, so this episode counts as a failure"
            )

    def _geom_id(self, name: str) -> int:
        return mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, name)

    def _body_id(self, name: str) -> int:
        return mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name)

    def _joint_qpos_adr(self, name: str) -> int:
        jid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, name)
        return int(self.model.jnt_qposadr[jid])
