"""Importing a backend package (hrm_torch or hrm_mlx) without importing either framework up front.

What a backend provides is written once, in core/contract.py; this loader imports a package's contract modules and
checks them against it. It lives in core/ so that every package may load a backend (convert/ without reaching
app/); choosing one is app/backend.py's.
"""

from types import ModuleType

from hrm_shared.core.contract import BACKENDS, contract_modules, installed, problems
from hrm_shared.core.errors import HRMError, install_hint


def import_backend(name: str) -> ModuleType:
    """Backend `hrm_<name>`'s contract modules (core/contract.py MODULES) as the attributes of a module of that name
    (contract_modules), checked against the contract; HRMError when the backend is unknown or its framework is not
    installed."""
    if name not in BACKENDS:
        raise HRMError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if not installed(name):
        raise HRMError(f"the {name} backend is not installed: {install_hint(name)}")
    package = contract_modules(name)
    if missing := problems(package):
        raise HRMError(f"internal: hrm_{name} does not follow the backend contract (core/contract.py): "
                       f"{'; '.join(missing)}")
    return package
