"""Where configs and studies come from: conf/ (inside the package in a plain install, the repository's in an
editable one), the shipped studies (experiments/, the config group `experiment`) and the folders a
user names in EMERGENCE_STUDY_PATH (os.pathsep-separated), each holding `<name>.yaml` study files written like
experiments/*.yaml. A user's study is registered in Hydra's ConfigStore under the same group, so
`emergence sweep <name>` and `emergence train -m experiment=<name>` find it from any folder."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf


def _conf_dir() -> str:
    package = Path(__file__).resolve().parents[1]
    installed = package / "conf"
    return str(installed if (installed / "config.yaml").is_file() else package.parents[1] / "conf")


CONF_DIR = _conf_dir()
STUDY_PATH_ENV = "EMERGENCE_STUDY_PATH"


def study_files() -> dict[str, Path]:
    """Every study by name; a user's folder that is missing, or a name found twice, is a one-line error."""
    found = {p.stem: p for p in sorted((Path(CONF_DIR) / "experiment").glob("*.yaml"))}
    for entry in filter(None, os.environ.get(STUDY_PATH_ENV, "").split(os.pathsep)):
        folder = Path(entry).expanduser()
        if not folder.is_dir():
            raise ValueError(f"{STUDY_PATH_ENV}: no such folder: {folder}")
        for path in sorted(folder.glob("*.yaml")):
            if path.stem in found:
                raise ValueError(f"study {path.stem!r} is in both {found[path.stem]} and {path}: rename one")
            found[path.stem] = path
    return found


def studies() -> list[str]:
    return sorted(study_files())


def register_user_studies() -> None:
    """Put the studies of EMERGENCE_STUDY_PATH into Hydra's config group `experiment`."""
    shipped = Path(CONF_DIR) / "experiment"
    store = ConfigStore.instance()
    for name, path in study_files().items():
        if path.parent != shipped:
            store.store(group="experiment", name=name, node=OmegaConf.load(path), package="_global_")
