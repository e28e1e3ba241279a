"""The Hugging Face Hub (the optional extra `hub`): downloads of the official datasets' CSV files, the official
checkpoints and our own checkpoints (`hub:OWNER/REPO`), and the upload of ours (`hrm push`). Downloads go through
huggingface_hub's own cache (HF_HUB_CACHE or HF_HOME), so a second run reads them from disk, and HF_HUB_OFFLINE=1
reads only the cache.
"""

import logging
from pathlib import Path

from hrm_shared.core.checkpoint import CONFIG_FILE, IDENTIFIERS_FILE, MODEL_FILE
from hrm_shared.core.errors import HRMError, install_hint

SUDOKU_REPO = "sapientinc/sudoku-extreme"
MAZE_REPO = "sapientinc/maze-30x30-hard-1k"
HUB_PREFIX = "hub:"  # `hrm convert --from-official hub:REPO`
CSV_FILES = ("train.csv", "test.csv")
REFERENCE_CONFIG = "all_config.yaml"
# Files a checkpoint repo holds beside its step file: the model card, configs and the source files the reference's
# pretrain.py copies next to each checkpoint (hidden files, such as .gitattributes, are skipped as well).
METADATA_SUFFIXES = (".md", ".py", ".yaml", ".yml", ".json", ".txt")
CARD_FILE = "README.md"  # the model card, where the Hub looks for it
# The files of one of our checkpoints on the Hub: the checkpoint's own and the card.
CHECKPOINT_REPO_FILES = (CONFIG_FILE, MODEL_FILE, IDENTIFIERS_FILE, CARD_FILE)

log = logging.getLogger(__name__)


def _hub():
    """The huggingface_hub module; HRMError saying how to install it when it is missing."""
    try:
        import huggingface_hub
    except ImportError:
        raise HRMError(f"the Hugging Face Hub needs huggingface_hub: {install_hint('hub')}") from None
    return huggingface_hub


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


def download_checkpoint(repo: str) -> Path:
    """The local directory of our checkpoint in Hub model repo `repo` (config.json, model.safetensors, optional
    identifiers.json and card), downloaded into the cache when missing."""
    alternative = f"download {CONFIG_FILE} and {MODEL_FILE} of {repo} elsewhere and pass their directory"
    folder = snapshot(repo, "model", alternative, allow=list(CHECKPOINT_REPO_FILES))
    missing = [name for name in (CONFIG_FILE, MODEL_FILE) if not (folder / name).is_file()]
    if missing:
        raise HRMError(f"the model {repo} ({folder}) holds no {' and no '.join(missing)}: it is not an hrm "
                       f"checkpoint; {alternative}")
    log.debug("hub:%s is %s", repo, folder)
    return folder


def upload(folder: Path, repo: str, private: bool = False, message: str = "Upload an hrm checkpoint") -> str:
    """Create Hub model repo `repo` when it does not exist and upload every file of `folder` to its root in one
    commit; returns the commit's URL. HRMError when the Hub refuses (no login, no rights, no network)."""
    hub = _hub()
    from huggingface_hub.utils import HfHubHTTPError, HFValidationError

    api = hub.HfApi()
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo, repo_type="model", folder_path=str(folder), commit_message=message)
    except HFValidationError as e:
        raise HRMError(f"{repo!r} is not a Hugging Face repo id ({str(e).splitlines()[0]})") from None
    except HfHubHTTPError as e:
        raise HRMError(f"uploading to the Hugging Face Hub model {repo} failed ({str(e).splitlines()[0]}); log in "
                       f"with `hf auth login` and check your rights on {repo}") from None
    except Exception as e:  # the HTTP client's own errors (no network, a refused connection), whichever client it is
        raise HRMError(f"uploading to the Hugging Face Hub model {repo} failed ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else 'no message'}); check the network and try again") \
            from None
    return str(getattr(commit, "commit_url", commit))
