"""Downloads from the Hugging Face Hub (the optional extra `hub`): the official datasets' CSV files and the
official checkpoints. Files go through huggingface_hub's own cache (HF_HUB_CACHE or HF_HOME), so a second run reads
them from disk, and HF_HUB_OFFLINE=1 reads only the cache.
"""

from pathlib import Path

from hrm_shared.core.errors import HRMError, install_hint

SUDOKU_REPO = "sapientinc/sudoku-extreme"
MAZE_REPO = "sapientinc/maze-30x30-hard-1k"
HUB_PREFIX = "hub:"  # `hrm convert --from-official hub:REPO`
CSV_FILES = ("train.csv", "test.csv")
REFERENCE_CONFIG = "all_config.yaml"
# Files a checkpoint repo holds beside its step file: the model card, configs and the source files the reference's
# pretrain.py copies next to each checkpoint (hidden files, such as .gitattributes, are skipped as well).
METADATA_SUFFIXES = (".md", ".py", ".yaml", ".yml", ".json", ".txt")


def snapshot(repo: str, repo_type: str, alternative: str, allow: list[str] | None = None,
             ignore: list[str] | None = None) -> Path:
    """The local snapshot directory of Hub repo `repo` ("dataset" or "model"): its files matching the glob patterns
    `allow` (None: all) and not `ignore`, downloaded into the cache when missing; a failure is an HRMError that ends
    with `alternative`."""
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.utils import (
            HfHubHTTPError,
            HFValidationError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError:
        raise HRMError(f"downloading from the Hugging Face Hub needs huggingface_hub: {install_hint('hub')}") from None
    try:
        return Path(snapshot_download(repo, repo_type=repo_type, allow_patterns=allow, ignore_patterns=ignore))
    except HFValidationError as e:
        raise HRMError(f"{repo!r} is not a Hugging Face repo id ({str(e).splitlines()[0]})") from None
    except LocalEntryNotFoundError:  # offline (HF_HUB_OFFLINE=1) or unreachable, and not in the cache
        raise HRMError(f"cannot reach the Hugging Face Hub for the {repo_type} {repo} and it is not in the cache "
                       f"{constants.HF_HUB_CACHE}; {alternative}") from None
    except RepositoryNotFoundError:
        raise HRMError(f"the Hugging Face Hub has no {repo_type} {repo} (or it is private or gated: log in with "
                       f"`hf auth login`); {alternative}") from None
    except HfHubHTTPError as e:
        raise HRMError(f"downloading the {repo_type} {repo} failed ({str(e).splitlines()[0]}); {alternative}") from None


def download_csv_dir(repo: str) -> Path:
    """The directory holding train.csv and test.csv of Hub dataset `repo` (official format), downloaded if needed."""
    alternative = f"download {' and '.join(CSV_FILES)} of {repo} elsewhere and pass --csv-dir DIR"
    folder = snapshot(repo, "dataset", alternative, allow=list(CSV_FILES))
    missing = [name for name in CSV_FILES if not (folder / name).is_file()]
    if missing:  # not in the repo, or a cache that holds only part of it
        raise HRMError(f"the dataset {repo} ({folder}) holds no {', '.join(missing)}; {alternative}")
    return folder


def download_step_file(repo: str) -> Path:
    """The step file of the official checkpoint in Hub model repo `repo`, downloaded with the other files at the
    repo's root: the one file beside all_config.yaml that is not a metadata file (README, code copies)."""
    alternative = (f"download the step file and {REFERENCE_CONFIG} of {repo} elsewhere and pass the step file's "
                   f"path to --from-official")
    folder = snapshot(repo, "model", alternative, ignore=["*/*"])  # the root's files: the official repos' layout
    beside = sorted(p.name for p in folder.iterdir() if p.is_file())
    if REFERENCE_CONFIG not in beside:
        found = ", ".join(beside) or "no files"
        raise HRMError(f"the model {repo} holds no {REFERENCE_CONFIG} at its root (found: {found}); {alternative}")
    steps = [name for name in beside if not name.startswith(".") and Path(name).suffix not in METADATA_SUFFIXES]
    if len(steps) != 1:
        raise HRMError(f"the model {repo} should hold one step file beside {REFERENCE_CONFIG}, found "
                       f"{len(steps)} among {', '.join(beside)}; {alternative}")
    return folder / steps[0]
