"""Weights & Biases logging for `launch.run --wandb_project=P [--wandb_entity=E --wandb_mode=M]`.

An optional extra (`pip install -e '.[wandb]'`). The runner hands this logger, between jitted
chunks, what it writes to metrics.csv / eval.csv / summary.json:

    each logged update   seed means of the metrics (eval ones as "eval/<name>"), and the step
                         axes "update", "env_steps" / "grad_steps", "wall_time"; the wandb step
                         is the update count, and every metric's x-axis defaults to env_steps
                         (online RL) or grad_steps (offline RL, diffusion) where the run has one
    the run config       config.json's content
    the summary          the final aggregates (mean / CI / IQM per metric), wall time, package
                         versions, git commit and the CI note, in the wandb run's summary

The wandb run id is derived from the workdir's absolute path, so a resumed run (same command,
same workdir) continues the same wandb run. Modes: "online", "offline" (files under the
workdir's `wandb/`, or $WANDB_DIR; `wandb sync` uploads them later) and "disabled".
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

MODES = ("online", "offline", "disabled")
INSTALL_HINT = "pip install -e '.[wandb]' (or pip install wandb)"


def check_installed() -> None:
    """ImportError with the install command when wandb cannot be imported."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ImportError(f"--wandb_project needs the wandb package, which is not installed: "
                          f"{INSTALL_HINT}") from None


def run_id(workdir: str) -> str:
    """A stable wandb run id for `workdir` (resumes continue the same wandb run)."""
    return "jaxrl-" + hashlib.sha1(os.path.abspath(workdir).encode()).hexdigest()[:16]


class WandbLogger:
    """The runner's `loggers` interface over one wandb run, started at the first write."""

    def __init__(self, *, project: str, entity: str | None, mode: str, run_config: dict,
                 workdir: str, name: str | None = None):
        if mode not in MODES:
            raise ValueError(f"--wandb_mode={mode!r} is not one of {', '.join(MODES)}")
        check_installed()
        self._init_args = dict(project=project, entity=entity or None, mode=mode,
                               config=run_config, name=name, id=run_id(workdir),
                               resume="allow")
        if not os.environ.get("WANDB_DIR"):
            self._init_args["dir"] = workdir
        self._workdir = workdir
        self.run = None

    def _start(self, axes: dict) -> None:
        import wandb
        if "dir" in self._init_args:
            os.makedirs(self._init_args["dir"], exist_ok=True)
        self.run = wandb.init(**self._init_args)
        x = next((a for a in ("env_steps", "grad_steps") if a in axes), "update")
        for axis in ("update", "env_steps", "grad_steps", "wall_time"):
            self.run.define_metric(axis)
        self.run.define_metric("*", step_metric=x)

    def write(self, kind: str, step: int, per_seed: dict, axes: dict) -> None:
        if self.run is None:
            self._start(axes)
        prefix = "" if kind == "metrics" else "eval/"
        data = {prefix + name: float(np.mean(values)) for name, values in per_seed.items()
                if name not in axes}
        self.run.log({**data, "update": step, **axes}, step=step)

    def write_summary(self, payload: dict) -> None:
        if self.run is None:
            self._start(payload.get("steps", {}))
        for name, agg in payload.get("aggregate", {}).items():
            for stat in ("mean", "ci_low", "ci_high", "iqm"):
                self.run.summary[f"final/{name}/{stat}"] = agg[stat]
        for key in ("wall_time", "steps", "versions", "git", "ci_note", "title"):
            if key in payload:
                self.run.summary[key] = payload[key]

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
