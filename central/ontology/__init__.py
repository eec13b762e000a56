"""The ontology layer: one graph of the city (devices, gateways, brokers, services, threats,
countermeasures) that the hub reasons with, operators query and other tools read as STIX 2.1.

Its libraries (rdflib, owlrl, pyshacl, stix2, stix2-validator) are the optional `ontology`
extra: the hub runs without them, and the commands that need them say what to install.
"""
from __future__ import annotations

import importlib.util

EXTRA_MODULES = {"rdflib": "rdflib", "pyshacl": "pyshacl", "stix2": "stix2", "stix2validator": "stix2-validator"}


class OntologyUnavailable(RuntimeError):
    """The ontology extra is not installed; the message says what to install."""


def missing(*modules: str) -> list[str]:
    """The PyPI names of the given modules (default: all of the extra) that cannot be imported."""
    names = modules or tuple(EXTRA_MODULES)
    return [EXTRA_MODULES.get(m, m) for m in names if not _importable(m)]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules (set to None)
        return False


def require(*modules: str) -> None:
    gone = missing(*modules)
    if gone:
        raise OntologyUnavailable(f"the city graph needs the ontology extra (missing: {', '.join(gone)}): "
                                  "pip install 'atlas-iot[ontology]'")
