"""Evaluation config: a QA set, the setups (pipeline configs) to compare, and run settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from ..core.errors import ConfigError
from .loading import apply_overrides, describe_error, load_config, project_root_for, read_yaml
from .schema import Config
from .section import _Section


SHIPPED_SETUPS = Path(__file__).resolve().parents[2] / "configs" / "eval" / "setups"


class DatasetConfig(_Section):
    kind: str = Field(description="klue_mrc | squad | korquad | beir | hf_klue_mrc")
    path: str | None = Field(None, description="File (or BEIR folder); relative to the project root")
    name: str | None = Field(None, description="Label in reports (default: the file name)")


class EvalConfig(_Section):
    dataset: DatasetConfig
    setups: list[str] = Field(min_length=1, description="Setup names: YAML files in setups_dir (without .yaml)")
    setups_dir: str = Field("configs/eval/setups", description="Folder of setup pipeline configs, relative to the project "
                                                                "root; when unset, setups missing there come from ragpipe's own")
    default_setup: str = Field("hybrid", description="Setup the paired tests compare against")
    anchors: dict[str, str] = Field(
        default_factory=lambda: {"anchor-llamaindex": "llamaindex"},
        description="Setups built from LlamaIndex's own components instead of ragpipe's (name -> kind)",
    )
    output_dir: str = Field("runs", description="Run directories are created under this folder")
    depth: int = Field(40, ge=20, description="Nodes retrieved per query before collapsing to documents")
    bootstrap_resamples: int = Field(1000, ge=100)
    seed: int = Field(0)
    limit: int | None = Field(None, ge=1, description="Evaluate this many sampled questions (corpus kept whole)")
    base_dir: str = "."

    def resolve(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def setup_path(self, name: str) -> Path:
        return self.resolve(self.setups_dir) / f"{name}.yaml"

    def load_setups(self) -> dict[str, Config]:
        """Every setup's pipeline config, validated; a missing file names the setup and ``setups_dir``.

        With ``setups_dir`` unset, a setup missing there (an eval config outside a ``configs/`` tree) is taken
        from the setups that ship with ragpipe's source tree.
        """
        out: dict[str, Config] = {}
        for name in self.setups:
            path = self.setup_path(name)
            shipped = SHIPPED_SETUPS / f"{name}.yaml"
            if not path.exists() and "setups_dir" not in self.model_fields_set and shipped.exists():
                path = shipped
            if not path.exists():
                raise ConfigError(f"evaluation.setups: no setup file {path} for {name!r}; set evaluation.setups_dir to the "
                                  f"folder of setup configs (absolute, or relative to {self.base_dir})",
                                  path=path, key="evaluation.setups", value=name)
            out[name] = load_config(path)
        if self.default_setup not in out:
            raise ConfigError(f"evaluation.default_setup = {self.default_setup!r} is not one of the setups: {', '.join(self.setups)}", key="evaluation.default_setup")
        return out


def is_eval_config(path: str | Path) -> bool:
    raw = read_yaml(path)
    return isinstance(raw, dict) and "evaluation" in raw


def load_eval_config(path: str | Path, overrides: list[str] | None = None) -> EvalConfig:
    """Load ``evaluation:`` from a YAML file; ``--set evaluation.dataset.path=...`` overrides apply."""

    path = Path(path)
    raw = apply_overrides(read_yaml(path), overrides or [])
    if set(raw) != {"evaluation"}:
        extra = ", ".join(sorted(set(raw) - {"evaluation"})) or "(missing 'evaluation')"
        raise ConfigError(f"{path}: an evaluation config has one top-level key 'evaluation'; found {extra}", path=path)
    data: dict[str, Any] = dict(raw["evaluation"] or {})
    data.setdefault("base_dir", str(project_root_for(path)))
    try:
        return EvalConfig.model_validate(data)
    except ValidationError as exc:
        lines = ["evaluation." + describe_error(e, data) for e in exc.errors()]
        raise ConfigError(f"{path}: " + "; ".join(lines), path=path) from exc
